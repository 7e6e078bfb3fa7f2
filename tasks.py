#!/usr/bin/env python3
"""Set-up and entry commands that need nothing but python3.

    python3 tasks.py demo    # make .venv (CPU torch), run the main job
    python3 tasks.py test    # make .venv (with dev tools), lint, run the test suite

The venv is rebuilt only when pyproject.toml or constraints-cpu.txt change.
Extra arguments after the command go to the main job / pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".installed"


def run(*cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, **kw).returncode


def ensure_venv() -> None:
    inputs = b"".join((ROOT / f).read_bytes() for f in ("pyproject.toml", "constraints-cpu.txt"))
    digest = hashlib.sha256(inputs).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PY.exists():
        return
    if not PY.exists() and run(sys.executable, "-m", "venv", VENV):
        sys.exit("could not create .venv")
    # constraints-cpu.txt pins the CPU build of torch (the open range in
    # pyproject.toml would pull a CUDA build of several GB).
    if run(PY, "-m", "pip", "install", "-q", "-c", "constraints-cpu.txt", "-e", ".[dev]"):
        sys.exit("pip install failed")
    STAMP.write_text(digest)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    ensure_venv()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if command == "demo":
        return run(PY, "-m", "arplatform", "demo", *extra, env=env)
    if run(PY, "-m", "ruff", "check", ".", env=env):
        return 1
    # One process: on 2 cores the Ray tests are CPU-bound (docs/testing.md), so running them side
    # by side was slower. --durations: the slowest tests, so the suite's time stays visible in CI.
    return run(PY, "-m", "pytest", "-q", "--timeout=900", "--durations=12", *extra, env=env)


if __name__ == "__main__":
    sys.exit(main())
