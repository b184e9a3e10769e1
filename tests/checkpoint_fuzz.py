"""Worker of the checkpoint fuzz test: loads single-bit flips of a real FIITED checkpoint, one after another.

    python -m tests.checkpoint_fuzz CHECKPOINT SEED FIRST COUNT

For flip i in [FIRST, FIRST + COUNT) (bit positions drawn from SEED), prints one line ``i outcome`` and flushes:
``torch_load`` (the file no longer reads as a weights-only checkpoint), ``refused`` (``load_state_dict`` named a
problem; the module kept its state), ``loaded`` (the flipped checkpoint passed the store's validation: the
module is then validated again and trains a step). Any other exception prints ``error <type>: <message>``;
a crash (a signal) ends the process, which the test sees as the missing line.
"""
from __future__ import annotations

import io
import random
import sys
import warnings

import torch

import emb_opt
from tests.fiited_helpers import random_kjt, small_tables

BUDGET, CHUNK = 20000, 4


def build() -> emb_opt.FiitedEmbeddingBagCollection:
    return emb_opt.FiitedEmbeddingBagCollection(small_tables(), BUDGET, chunk_size=CHUNK, warmup_steps=2,
                                                resize_interval=2)


def train(module: emb_opt.FiitedEmbeddingBagCollection, steps: range) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in steps:
            module(random_kjt(step)).values().pow(2).sum().backward()


def flips(size: int, seed: int, count: int):
    rng = random.Random(seed)
    return [rng.randrange(size * 8) for _ in range(count)]


def outcome(module: emb_opt.FiitedEmbeddingBagCollection, data: bytes) -> str:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- a damaged file that does not read is the expected refusal
        return "torch_load"
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError):
        return "refused"
    problems = module.store.checkpoint_problems(module.store.state_dict(prefix="store."), "store.")
    if problems:
        return f"error invalid after load: {problems[0]}"
    module.train()
    train(module, range(50, 51))
    return "loaded"


def main(argv) -> int:
    path, seed, first, count = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    torch.set_num_threads(1)  # tiny tensors: thread wake-ups would cost more than the work
    with open(path, "rb") as f:
        original = f.read()
    positions = flips(len(original), seed, first + count)
    module = build()
    for i in range(first, first + count):
        data = bytearray(original)
        data[positions[i] // 8] ^= 1 << (positions[i] % 8)
        try:
            result = outcome(module, bytes(data))
        except Exception as error:  # noqa: BLE001 -- reported, the test fails on it
            result = f"error {type(error).__name__}: {str(error)[:200]}"
        print(i, result, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
