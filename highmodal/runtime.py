"""CPU threads that fit the machine the process actually has, without busy-waiting on shared cores.

PyTorch's CPU builds run intra-op work on OpenMP threads which, by default, spin while they wait
for the next parallel region. When another busy process shares the cores, the spinning threads
take the time slices the working ones need, and throughput falls far below the fair share
(docs/performance.md, "Shared cores"). So, unless the user has set them:

* ``GOMP_SPINCOUNT=3000``: a waiting thread spins 3,000 times (GNU OpenMP's default is 300,000)
  before it sleeps: the compromise ``highmodal bench contention`` found between spinning (fast
  alone, collapses beside a busy process) and never spinning (``OMP_WAIT_POLICY=PASSIVE``, robust
  but slower alone); the figures are in docs/performance.md;
* ``OMP_NUM_THREADS`` = the CPUs this process may run on: its affinity mask, capped by a cgroup CPU
  quota (a container limited to 2 CPUs on a 64-core host gets 2 threads, not 64);
* ``NUMBA_NUM_THREADS`` the same, for the numba kernels behind the MiniRocket baseline, which
  would otherwise start one thread per host CPU whatever the quota or ``HIGHMODAL_THREADS`` says.

OpenMP and numba read them once, when they load, so ``import highmodal`` sets them as defaults
(explicit values win; importing torch or numba first leaves their own choices).
``HIGHMODAL_THREADS`` or ``train.threads`` override the thread count; ``HIGHMODAL_WAIT_POLICY=openmp``
keeps OpenMP's own wait behaviour, and a user's ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is kept.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from highmodal.errors import HighmodalError

SPIN_COUNT = "3000"
THREADS_ENV = "HIGHMODAL_THREADS"


def apply_defaults() -> None:
    """OpenMP defaults for this process and its children (see the module doc); effective only
    before torch is first imported. A bad ``HIGHMODAL_THREADS`` is left for the CLI to report."""
    if os.environ.get("HIGHMODAL_WAIT_POLICY") != "openmp" and "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
    with contextlib.suppress(HighmodalError):
        for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ.setdefault(name, str(thread_count()))


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None without one."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def thread_count(requested: int | None = None) -> int:
    """``requested`` (e.g. ``train.threads``), else ``HIGHMODAL_THREADS``, else ``available_cpus()``."""
    if requested is not None:
        return requested
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise HighmodalError(f"{THREADS_ENV}={env!r}: expected a positive integer")
        return value
    return available_cpus()
