"""Checkpoints of a FIITED store: a damaged one is refused before it touches the module, naming the buffer and the
first bad position; files are written atomically and read without running code."""
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

import emb_opt
from emb_opt.store_checkpoint import LAYOUT_VERSION
from emb_opt.store_counters import StoreCounter
from tests.checkpoint_fuzz import build, train
from tests.fiited_helpers import random_kjt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def saved():
    module = build()
    train(module, range(6))
    assert module.store.num_rows > 10 and len(module.telemetry) >= 2
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in module.state_dict().items()}


def stored_entries(sd):
    return (sd["store.entry_chunks"] > 0).nonzero().reshape(-1).tolist()


def damage(sd, name, edit):
    sd = dict(sd)
    sd[name] = sd[name].clone()
    edit(sd[name], sd)
    return sd


def _first_run_past(t, sd):
    e = stored_entries(sd)[0]
    t[e] = int(sd["store.counters"][StoreCounter.HIGH_WATER])


def _share_slots(t, sd):
    a, b = stored_entries(sd)[:2]
    t[b] = t[a]


def _duplicate_key(t, sd):
    a, b = stored_entries(sd)[:2]
    t[b] = t[a]


def _bucket_past_the_end(t, sd):
    t[(t < 0).nonzero()[0]] = sd["store.entry_keys"].numel()


def _foreign_table(t, sd):
    e = stored_entries(sd)[0]
    t[e] = (t[e] & ((1 << 53) - 1)) | (7 << 53)


CASES = [
    ("store.entry_first", _first_run_past, r"store.entry_first\[\d+\] = \d+: the row's run of slots must lie inside"),
    ("store.entry_first", _share_slots, r"store.entry_first\[\d+\] = \d+: the row's slots overlap another row's run"),
    ("store.entry_keys", _duplicate_key, r"store.entry_keys: row key \d+ is stored twice"),
    ("store.entry_keys", _foreign_table, r"store.entry_keys\[\d+\] = \d+: the key's table is not one of this store's 2"),
    ("store.entry_chunks", lambda t, sd: t.__setitem__(stored_entries(sd)[0], -3),
     r"store.entry_chunks\[\d+\] = -3: a chunk count must be >= 0"),
    ("store.hash_buckets", _bucket_past_the_end, r"store.hash_buckets\[\d+\] = \d+: must be -1 or an entry in \[0, \d+\)"),
    ("store.counters", lambda t, sd: t.__setitem__(StoreCounter.HIGH_WATER, 0),
     r"store.entry_first\[\d+\] = \d+: the row's run of slots must lie inside \[0, high_water = 0\)"),
    ("store.counters", lambda t, sd: t.__setitem__(StoreCounter.STEP, -5), r"store.counters\[0\] = -5: a counter must be >= 0"),
    ("store.pool_weights", lambda t, sd: t.__setitem__((0, 1), float("nan")), r"store.pool_weights\[1\] = nan: must be finite"),
    ("store.slot_utility", lambda t, sd: t.__setitem__(2, -1.0), r"store.slot_utility\[2\] = -1.0: must be >= 0"),
]


@pytest.mark.parametrize("name, edit, match", CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_a_damaged_store_is_refused_naming_the_buffer_and_the_module_keeps_its_state(saved, name, edit, match):
    module = build()
    train(module, range(20, 23))
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in module.state_dict().items()}
    telemetry = list(module.telemetry)
    with pytest.raises(RuntimeError, match=match):
        module.load_state_dict(damage(saved, name, edit))
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if isinstance(before[k], torch.Tensor))
    assert module.telemetry == telemetry
    train(module, range(30, 32))  # still trains
    module.load_state_dict(saved)  # and the undamaged checkpoint loads


def test_other_layout_versions_are_refused(saved):
    module = build()
    for version in (0, LAYOUT_VERSION + 1, None):
        sd = dict(saved)
        sd["store._extra_state"] = {**saved["store._extra_state"], "layout_version": version}
        with pytest.raises(RuntimeError, match=rf"store._extra_state: the checkpoint's store layout_version {version!r} "
                                               rf"is not this version's {LAYOUT_VERSION}"):
            module.load_state_dict(sd)
    missing = {k: v for k, v in saved.items() if k != "store._extra_state"}
    with pytest.raises(RuntimeError, match="does not say its store layout version"):
        module.load_state_dict(missing, strict=False)


def test_fuzzed_checkpoints_never_crash_and_load_only_valid_stores(saved, tmp_path):
    """1,000 single-bit flips of a real checkpoint file, loaded in worker processes (tests/checkpoint_fuzz.py):
    every flip is refused (by torch.load or by load_state_dict) or loads a store that passes the same validation
    and trains; no process dies of a signal. A worker that died would be restarted after the flip it died on."""
    path = tmp_path / "fiited.pt"
    emb_opt.save_checkpoint(saved, path)
    total, seed, seen = 1000, 1234, {}
    first, crashes = 0, []
    while first < total:
        run = subprocess.run([sys.executable, "-m", "tests.checkpoint_fuzz", str(path), str(seed), str(first),
                              str(total - first)], cwd=ROOT, capture_output=True, text=True, timeout=600)
        for line in run.stdout.splitlines():
            index, outcome = line.split(" ", 1)
            seen[int(index)] = outcome
        done = max(seen) + 1 if seen else first
        if run.returncode != 0:
            crashes.append((done, run.returncode, run.stderr[-500:]))
            done += 1
        first = done
    assert not crashes, crashes
    errors = {i: o for i, o in seen.items() if o.startswith("error")}
    assert not errors, errors
    counts = {o: sum(1 for v in seen.values() if v == o) for o in ("torch_load", "refused", "loaded")}
    assert sum(counts.values()) == total
    assert counts["refused"] >= 20 and counts["loaded"] >= 20, counts  # the flips reach both the checks and the data


def test_save_checkpoint_is_atomic_under_kill(tmp_path):
    """A writer killed at random moments while it overwrites the checkpoint leaves a file that loads whole: the old
    contents or the new, never a mix."""
    path = tmp_path / "ckpt.pt"
    # the writer loads emb_opt/checkpoint_files.py alone (no TorchRec import): each attempt starts quickly
    script = ("import importlib.util, sys, torch\n"
              "spec = importlib.util.spec_from_file_location('files', 'emb_opt/checkpoint_files.py')\n"
              "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
              "i = 0\n"
              "while True:\n"
              "    i += 1\n"
              "    files.save_checkpoint({'step': i, 'w': torch.full((200_000,), float(i))}, sys.argv[1])\n"
              "    print(i, flush=True)\n")
    emb_opt.save_checkpoint({"step": 0, "w": torch.zeros(200_000)}, path)
    for attempt in range(8):
        writer = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=ROOT, stdout=subprocess.PIPE)
        writer.stdout.readline()  # it is writing now
        time.sleep(0.01 * (attempt % 5))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        state = emb_opt.load_checkpoint(path)
        assert torch.equal(state["w"], torch.full((200_000,), float(state["step"])))
    leftovers = [p for p in os.listdir(tmp_path) if p != "ckpt.pt"]
    assert all(p.endswith(".tmp") for p in leftovers)  # a killed writer may leave its temporary file, never the target


def test_load_checkpoint_refuses_a_pickle_that_would_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused to load: it holds objects other than tensors"):
        emb_opt.load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


def test_a_checkpoint_round_trip_through_files_continues_bit_identically(tmp_path):
    a = build()
    train(a, range(4))
    emb_opt.save_checkpoint({"model": a.state_dict()}, tmp_path / "a.pt")
    b = build()
    b.load_state_dict(emb_opt.load_checkpoint(tmp_path / "a.pt")["model"])
    for step in range(10, 15):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            outs = [m(random_kjt(step)).values() for m in (a, b)]
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
        for out in outs:
            out.pow(2).sum().backward()
    assert a.telemetry == b.telemetry and len(a.telemetry) > 2
