import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real ``highmodal`` CLI in a subprocess (same interpreter as the tests)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HIGHMODAL_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "highmodal.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"highmodal {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli
