import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from highmodal import runtime

if "PYTEST_XDIST_WORKER" in os.environ:
    # `make test` runs one pytest-xdist worker per available CPU: each worker, and every CLI it starts,
    # gets its share of the CPUs rather than one OpenMP thread per CPU each (set before torch loads).
    _share = max(1, runtime.available_cpus() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = os.environ[runtime.THREADS_ENV] = str(_share)

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import highmodal
from tests.cli_process import run_forked


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: the CPUs this process may use (affinity and cgroup quota), not the host's count."""
    return runtime.available_cpus()


def run_cli(*args: str, cwd: Path | None = None, check: bool = False, fresh: bool = False
            ) -> subprocess.CompletedProcess:
    """Run the real ``highmodal`` CLI in its own process: a child of a preloaded forkserver
    (``tests/cli_process.py``), or with ``fresh`` a new interpreter (``python -m highmodal.cli``)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HIGHMODAL_DEBUG", None)
    if fresh:
        proc = subprocess.run([sys.executable, "-m", "highmodal.cli", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
    else:
        proc = run_forked(list(args), cwd, env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"highmodal {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared datasets folder; tests that need it skip with a reason when it is absent."""
    from highmodal.data.loaders import default_data_root

    root = default_data_root()
    if root is None or not root.is_dir():
        pytest.skip("shared datasets not found: set HIGHMODAL_DATA or place them at ../shared/datasets")
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Preprocessing caches go to a per-session folder, never the user's cache."""
    os.environ["HIGHMODAL_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def corrupt_copy(root: Path, dataset: str, damaged: str, tmp: Path) -> Path:
    """A data root whose ``dataset`` folder links to the real files except ``damaged``, which is a
    copy with one byte flipped; CHECKSUMS.sha256 is the real one."""
    new_root = tmp / "root"
    folder = new_root / dataset
    folder.mkdir(parents=True)
    (new_root / "CHECKSUMS.sha256").symlink_to(root / "CHECKSUMS.sha256")
    for item in (root / dataset).iterdir():
        if item.name != damaged.split("/")[0]:
            (folder / item.name).symlink_to(item)
    src = root / dataset / damaged
    dst = folder / damaged
    if "/" in damaged:  # a file inside a sub-folder: link the siblings, damage the one
        dst.parent.mkdir(parents=True)
        for sib in src.parent.iterdir():
            if sib.name != src.name:
                (dst.parent / sib.name).symlink_to(sib)
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return new_root


def assert_tiny_forward(suite, split: str = "train") -> None:
    """A tiny HighMMT over the whole suite gives finite (4, out_dim) outputs for every task."""
    import torch

    from highmodal.models import create_model
    from highmodal.training.batching import TaskTensors

    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny").eval()
    for td in suite:
        batch = TaskTensors(td.task, td.splits[split]).batch(slice(0, 4))
        with torch.no_grad():
            out = model(batch, td.task.name)
        assert out.shape == (4, td.task.out_dim) and torch.isfinite(out).all()


def assert_damage_is_named(data_root: Path, tmp_path: Path, dataset: str, damaged: str, entries: list[dict]) -> Path:
    """Loading ``entries`` from a root where ``dataset/damaged`` is corrupted, then missing, fails with
    a HighmodalError naming that file each time. Returns the damaged root for further checks."""
    from highmodal.data import LoadContext, build_suite
    from highmodal.errors import HighmodalError

    bad = corrupt_copy(data_root, dataset, damaged, tmp_path)
    name = re.escape(damaged.split("/")[-1])
    with pytest.raises(HighmodalError, match=rf"{name}: file is corrupted"):
        build_suite(entries, LoadContext(data_root=bad))
    (bad / dataset / damaged).unlink()
    with pytest.raises(HighmodalError, match=rf"{name}: required file .* is missing"):
        build_suite(entries, LoadContext(data_root=bad))
    return bad


PACKAGE = str(Path(highmodal.__file__).parent)


class StallCounter(TorchDispatchMode):
    """Counts the operations our code runs that make the host wait for a GPU: reading a value back,
    selecting by a boolean mask (the result's size is read back) and turning host data into a tensor
    (a copy to the device). Only calls made from highmodal's own code count: torch's optimisers read
    their step counters, which live on the host by design."""

    STALLS = frozenset({"aten._local_scalar_dense.default", "aten.lift_fresh.default", "aten.nonzero.default",
                        "aten.masked_select.default"})
    BOOL_INDEXED = frozenset({"aten.index.Tensor", "aten.index_put.default", "aten.index_put_.default"})  # x[mask]
    WRAPPERS = ("torch/_dynamo/", "torch/_compile.py", "torch/utils/_python_dispatch.py")

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in self.STALLS or (name in self.BOOL_INDEXED and any(
                i is not None and i.dtype == torch.bool for i in args[1])):
            frame = sys._getframe(1)
            while any(w in frame.f_code.co_filename for w in self.WRAPPERS):
                frame = frame.f_back
            if frame.f_code.co_filename.startswith(PACKAGE):
                self.counts[f"{name} at {frame.f_code.co_filename[len(PACKAGE):]}:{frame.f_lineno}"] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def stall_counter() -> type[StallCounter]:
    """``with stall_counter() as c:`` … ``c.counts``: stalling operations by op and source line."""
    return StallCounter
