"""Run the ``highmodal`` CLI in its own process without paying for a fresh interpreter each time.

Most of a CLI test's cost is the interpreter importing torch and scikit-learn (about 3 s on a
2-core machine, for ~100 CLI runs in the suite). A forkserver imports them once; every run is a
fresh child forked from it that sets its own working directory, environment and output files, then
executes ``highmodal.cli`` as ``__main__`` exactly as ``python -m highmodal.cli`` would: real argv
parsing, real exit codes, real files, real stdout/stderr at the file-descriptor level. What a
forked child cannot show is import-time behaviour (environment read before torch loads), so
tests about that start a fresh interpreter (``run_cli(..., fresh=True)`` or ``subprocess``).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

PRELOAD = ["tests.cli_process", "torch", "sklearn.model_selection", "sklearn.metrics", "sklearn.datasets",
           "sktime.datasets", "highmodal.cli", "highmodal.data"]

_context: multiprocessing.context.BaseContext | None = None


def _child(args: list[str], cwd: str | None, env: dict[str, str], out: str, err: str) -> None:
    """In the forked child: redirect fds 1/2 to files, then run the CLI module as ``__main__``."""
    if cwd is not None:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    warnings.simplefilter("ignore")  # PYTHONWARNINGS=ignore, as the fresh-interpreter runs have
    sys.argv = ["highmodal", *args]
    try:
        runpy.run_module("highmodal.cli", run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # the child leaves through os._exit, which skips them
        sys.stdout.flush()
        sys.stderr.flush()


def run_forked(args: list[str], cwd: Path | None, env: dict[str, str], timeout: float
               ) -> subprocess.CompletedProcess:
    """``args`` run by a child of the preloaded forkserver; returns what ``subprocess.run`` would."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory(prefix="highmodal-cli-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        proc = _context.Process(target=_child, args=(list(args), None if cwd is None else str(cwd), env,
                                                     str(out), str(err)))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(["highmodal", *args], timeout)
        return subprocess.CompletedProcess(["highmodal", *args], proc.exitcode,
                                           out.read_text(errors="replace"), err.read_text(errors="replace"))
