"""Every Python snippet in the README runs as written: each ```python block in its own namespace, in a scratch
folder; a block whose first line is ``# torchrun --nproc_per_node N`` runs under torchrun (CPU, gloo)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = re.compile(r"^# torchrun --nproc_per_node (\d+)\s*$")


def snippets():
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_the_readme_has_snippets_of_both_kinds():
    blocks = snippets()
    assert len(blocks) >= 4 and any(TORCHRUN.match(b.splitlines()[0]) for b in blocks)


def test_every_single_process_snippet_runs(tmp_path):
    blocks = [b for b in snippets() if not TORCHRUN.match(b.splitlines()[0])]
    runner = ("import sys, warnings\n"
              "blocks = sys.stdin.read().split('\\n#### NEXT ####\\n')\n"
              "warnings.simplefilter('ignore')\n"
              "for i, block in enumerate(blocks):\n"
              "    print(f'--- snippet {i}', flush=True)\n"
              "    exec(compile(block, f'README snippet {i}', 'exec'), {'__name__': '__main__'})\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", runner], input="\n#### NEXT ####\n".join(blocks), text=True,
                            cwd=tmp_path, env=env, capture_output=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert result.stdout.count("--- snippet") == len(blocks)


@pytest.mark.distributed
def test_every_torchrun_snippet_runs(tmp_path):
    blocks = [b for b in snippets() if TORCHRUN.match(b.splitlines()[0])]
    for i, block in enumerate(blocks):
        script = tmp_path / f"snippet_{i}.py"
        script.write_text(block)
        nproc = TORCHRUN.match(block.splitlines()[0]).group(1)
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 nproc, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
