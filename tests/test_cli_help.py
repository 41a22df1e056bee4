"""`--help` of every command answers without starting JAX (issue 15: well under a second).

Every module with a `__main__` block under experiments/, theory/ and benchmarks/, plus
`python -m sbjax.plots`, runs as `python -m <module> --help` in a fresh interpreter; an atexit hook
then lists which heavy libraries were imported. The assertion is about imports, not wall time (no
timed tests): JAX, Flax, optax, matplotlib or PyTorch in `sys.modules` after `--help` is what makes
a command's help take seconds.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("jax", "flax", "optax", "matplotlib", "torch")
MAIN_GUARD = 'if __name__ == "__main__":'


def _commands() -> list[str]:
    mods = [
        f"{path.parent.name}.{path.stem}"
        for folder in ("experiments", "theory", "benchmarks")
        for path in sorted((ROOT / folder).glob("*.py"))
        if MAIN_GUARD in path.read_text()
    ]
    return [*mods, "sbjax.plots"]


COMMANDS = _commands()

_PROBE = """
import atexit, runpy, sys
HEAVY = {heavy!r}
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in HEAVY if m in sys.modules)))
sys.argv = [{mod!r}, "--help"]
runpy.run_module({mod!r}, run_name="__main__", alter_sys=True)
"""


def test_every_known_command_is_found():
    for mod in ("experiments.extreme_sb", "theory.theorem1", "benchmarks.train_throughput"):
        assert mod in COMMANDS


@pytest.mark.parametrize("mod", COMMANDS)
def test_help_exits_zero_without_importing_jax(mod):
    r = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, mod=mod)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "usage:" in r.stdout, r.stdout[-2000:]
    heavy = r.stdout.strip().splitlines()[-1]
    assert heavy == "HEAVY=", f"python -m {mod} --help imported {heavy[6:]} before parsing"
