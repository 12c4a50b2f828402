"""Threads that fit the machine: cgroup quotas, affinity, the override and the OpenMP defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from highmodal import runtime
from highmodal.errors import HighmodalError


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert runtime.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime.cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cgroup_cpu_limit(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert runtime.cgroup_cpu_limit(tmp_path) is None


def test_available_cpus_is_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda: 1.5)
    assert runtime.available_cpus() == 2
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda: None)
    assert runtime.available_cpus() == 8


def test_thread_count_override_and_bad_value(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.thread_count() == 3 and runtime.thread_count(1) == 1
    monkeypatch.setenv(runtime.THREADS_ENV, "zero")
    with pytest.raises(HighmodalError, match="HIGHMODAL_THREADS='zero'"):
        runtime.thread_count()


def test_import_sets_openmp_defaults_unless_given():
    code = ("import highmodal, os, torch, numba; print(os.environ.get('GOMP_SPINCOUNT', '-'), "
            "os.environ.get('OMP_WAIT_POLICY', '-'), torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "HIGHMODAL_", "NUMBA_"))}

    def run(extra: dict) -> list[str]:
        return subprocess.run([sys.executable, "-c", code], env=env | extra, capture_output=True, text=True,
                              check=True).stdout.split()

    assert run({"HIGHMODAL_THREADS": "1"}) == [runtime.SPIN_COUNT, "-", "1", "1"]
    cpus = str(runtime.available_cpus())
    assert run({"OMP_WAIT_POLICY": "ACTIVE"}) == ["-", "ACTIVE", cpus, cpus]
    assert run({"HIGHMODAL_THREADS": "1", "NUMBA_NUM_THREADS": "2"})[3] == "2"  # an explicit value wins
    assert run({"HIGHMODAL_WAIT_POLICY": "openmp"})[0] == "-"
    assert run({"GOMP_SPINCOUNT": "7"})[0] == "7"


def test_a_bad_thread_override_is_a_clear_cli_error():
    env = os.environ | {"HIGHMODAL_THREADS": "-2"}
    proc = subprocess.run([sys.executable, "-m", "highmodal", "datasets"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "HIGHMODAL_THREADS='-2'" in proc.stderr and "Traceback" not in proc.stderr
