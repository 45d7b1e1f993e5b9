"""Every benchmark script under bench/ starts: its imports resolve and `--help` explains it.
(Two once imported a module that had been folded into the shared harness, and failed at once.)
`plot.py` runs in its own virtual environment, with matplotlib, so it is left out here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    path.name
    for path in (ROOT / "bench").glob("*.py")
    if "__main__" in path.read_text() and path.name != "plot.py"
)


def test_the_scripts_are_found() -> None:
    assert {"run.py", "scenarios.py", "prune_drain.py", "untaken_backlog.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_explains_itself(script: str) -> None:
    paths = [str(ROOT / "src"), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
