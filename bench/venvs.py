"""The benchmark's virtualenvs: one per peer and one for drawing, each from pinned packages.

bench/requirements-peers.txt and bench/requirements-plot.txt list packages under `[name]`
headings; `ensure_venv(name)` makes bench/.venvs/<name> from PyPI on first use (and again when
its list changes), so a peer's dependencies never meet Shoal's or another peer's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from processes import BenchError

BENCH_DIR = Path(__file__).resolve().parent
VENVS = BENCH_DIR / ".venvs"
REQUIREMENTS = (BENCH_DIR / "requirements-peers.txt", BENCH_DIR / "requirements-plot.txt")


def pinned(name: str) -> list[str]:
    """The packages listed under `[name]`; BenchError if no file has that heading."""
    for path in REQUIREMENTS:
        section: str | None = None
        found: list[str] = []
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif line and section == name:
                found.append(line)
        if found:
            return found
    raise BenchError(f"no pinned packages for {name!r}")


def venv_bin(name: str) -> Path:
    return VENVS / name / "bin"


def ensure_venv(name: str) -> Path:
    """The virtualenv's bin folder, made and installed first unless already up to date."""
    folder, packages = VENVS / name, pinned(name)
    marker, wanted = folder / "bench-packages.txt", "\n".join(packages)
    if marker.exists() and marker.read_text() == wanted:
        return venv_bin(name)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(folder)], check=True, timeout=120
        )
        pip = [str(venv_bin(name) / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(
            [*pip, "--disable-pip-version-check", *packages],
            check=True,
            timeout=600,
            capture_output=True,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"cannot install {name}: {' '.join(detail)}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"installing {name} took too long") from None
    marker.write_text(wanted)
    return venv_bin(name)


def freeze(name: str) -> list[str]:
    """What the virtualenv holds, for the run's record; empty if it cannot say."""
    try:
        done = subprocess.run(
            [str(venv_bin(name) / "python"), "-m", "pip", "freeze", "--disable-pip-version-check"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.decode(errors="replace").split()
