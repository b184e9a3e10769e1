"""The wheel cache the real-data loaders read from: cached wheels are used without the network, checked against
their pinned SHA-256 first, and a changed wheel is refused naming the file."""
import hashlib
import os
import zipfile

import pytest

from experiments.data import wheel_cache


def write_wheel(cache_dir, name="somepkg", version="1.0", members=None) -> str:
    wheels = os.path.join(cache_dir, "wheels")
    os.makedirs(wheels, exist_ok=True)
    path = os.path.join(wheels, f"{name.replace('-', '_')}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in (members or {"somepkg/data.txt": b"hello"}).items():
            archive.writestr(member, data)
    return path


def test_a_cached_wheel_with_its_hash_is_used_and_read(tmp_path, monkeypatch):
    path = write_wheel(str(tmp_path), name="some-pkg")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    monkeypatch.setattr(wheel_cache.subprocess, "run", lambda *a, **k: pytest.fail("downloaded a cached wheel"))
    assert wheel_cache.fetch_wheel("some-pkg", "1.0", str(tmp_path), sha256=digest) == path
    assert wheel_cache.read_member(path, "somepkg/data.txt") == b"hello"
    with pytest.raises(KeyError, match="no member 'somepkg/missing.txt'"):
        wheel_cache.read_member(path, "somepkg/missing.txt")


def test_a_wheel_whose_hash_differs_from_the_pin_is_refused(tmp_path, monkeypatch):
    path = write_wheel(str(tmp_path), name="recbole", version="1.2.1")
    with pytest.raises(ValueError, match="not the pinned .* of recbole==1.2.1"):
        wheel_cache.fetch_wheel("recbole", "1.2.1", str(tmp_path))
    monkeypatch.setitem(wheel_cache.PINNED_WHEELS, ("recbole", "1.2.1"),
                        hashlib.sha256(open(path, "rb").read()).hexdigest())
    assert wheel_cache.fetch_wheel("recbole", "1.2.1", str(tmp_path)) == path


def test_an_unpinned_package_needs_an_explicit_hash_choice(tmp_path):
    write_wheel(str(tmp_path))
    with pytest.raises(ValueError, match="no pinned SHA-256 for somepkg==1.0"):
        wheel_cache.fetch_wheel("somepkg", "1.0", str(tmp_path))
    assert wheel_cache.fetch_wheel("somepkg", "1.0", str(tmp_path), sha256=None).endswith(".whl")


def test_a_failed_download_says_what_to_run(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found"

    monkeypatch.setattr(wheel_cache.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(RuntimeError, match="(?s)could not download nopkg==9.9 .*No matching distribution.*pip download"):
        wheel_cache.fetch_wheel("nopkg", "9.9", str(tmp_path), sha256=None)


def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMB_OPT_DATA_CACHE", str(tmp_path))
    assert wheel_cache.default_cache_dir() == str(tmp_path)
    monkeypatch.delenv("EMB_OPT_DATA_CACHE")
    assert wheel_cache.default_cache_dir().endswith(os.path.join(".cache", "emb_opt"))
