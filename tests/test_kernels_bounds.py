"""Native ops never read or write outside their tensors: every hostile call of tests/kernel_bounds_cases.py (each op,
each index argument out of range, each relation between arguments broken, the audit's slots [[0, 1], [4, 5]] on a
4-row pool) raises IndexError / RuntimeError / ValueError -- on the CPU in both index check modes, on CUDA where
the mode checks it -- and never ends in a signal. The calls run in one subprocess per device and mode, so a crash
fails the cases it did not reach instead of killing pytest. Each op's valid call must return, on every path. The
references raise on every hostile call too."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import pytest

from kernel_bounds_cases import RAISED, all_cases, outcome
from kernel_cases import DEVICES, requires_extension

from cuda_ext import reference

pytestmark = requires_extension
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CASES = {case.name: case for case in all_cases()}
MODES = ("all", "ids")
# where the checks run: each device's own way, and on the CPU also the device paths (reductions, one read-back
# each: EMB_OPT_CHECKS_BY_REDUCTION=1), so that machines without a GPU run them too
RUNS = [(device, "own") for device in DEVICES] + [("cpu", "reductions")]


@pytest.fixture(scope="module")
def hostile_runs():
    runs: Dict[Tuple[str, str], subprocess.CompletedProcess] = {}

    def run(device: str, checks: str, mode: str) -> subprocess.CompletedProcess:
        if (device, checks, mode) not in runs:
            env = dict(os.environ, EMB_OPT_INDEX_CHECKS=mode, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]),
                       EMB_OPT_CHECKS_BY_REDUCTION="1" if checks == "reductions" else "0")
            runs[device, checks, mode] = subprocess.run(
                [sys.executable, str(TESTS / "kernel_bounds_cases.py"), device], cwd=ROOT, env=env,
                capture_output=True, text=True, timeout=900)
        return runs[device, checks, mode]
    return run


def outcomes(result: subprocess.CompletedProcess) -> Dict[str, str]:
    lines = [line[len("CASE "):].split("\t", 1) for line in result.stdout.splitlines() if line.startswith("CASE ")]
    return {name: result for name, result in lines}


@pytest.mark.parametrize("device,checks", RUNS)
@pytest.mark.parametrize("mode", MODES)
def test_no_hostile_call_ends_in_a_signal(hostile_runs, device, checks, mode):
    result = hostile_runs(device, checks, mode)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("DONE"), (
        f"exit {result.returncode} after {len(outcomes(result))} of {len(CASES)} cases\n{result.stderr[-3000:]}")


@pytest.mark.parametrize("device,checks", RUNS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_call_raises(hostile_runs, device, checks, mode, name):
    result = hostile_runs(device, checks, mode)
    got = outcomes(result).get(name)
    assert got is not None, f"not reached: the run stopped (exit {result.returncode})\n{result.stderr[-2000:]}"
    case = CASES[name]
    allowed = ("returned",) if case.valid else RAISED if case.expect_raise(device, mode) else RAISED + ("returned",)
    assert got in allowed, f"{name} on {device} ({checks} checks, mode {mode}): {got}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_raises_on_the_same_call(name):
    case = CASES[name]
    got = outcome(lambda: getattr(reference, case.op)(*case.arguments("cpu")))
    allowed = ("returned",) if case.valid else RAISED + ("returned",) if case.unchecked else RAISED
    assert got in allowed, f"{name}: the reference {got}"
