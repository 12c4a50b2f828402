"""The shared-cores benchmark runs each policy in a fresh process, alone and beside busy ones."""

from __future__ import annotations

import pytest

from highmodal.bench.contention import run_contention
from highmodal.errors import HighmodalError


@pytest.mark.slow  # two fresh processes and a busy neighbour: ~15 s
def test_contention_reports_each_policy_alone_and_contended():
    report = run_contention(steps=1, repeats=1, batch=4, policies=("spin:100",), log=lambda line: None)
    (row,) = report["rows"]
    assert row["policy"] == "spin:100" and row["env"]["GOMP_SPINCOUNT"] == "100" and row["threads"] >= 1
    for part in ("train", "infer"):
        assert row["alone"][part] > 0 and row["contended"][part] > 0
        assert row["share"][part] == pytest.approx(row["contended"][part] / row["alone"][part])


def test_unknown_policy_and_bad_count_are_clear_errors():
    with pytest.raises(HighmodalError, match=r"unknown 'spin'"):
        run_contention(policies=("spin",))
    with pytest.raises(HighmodalError, match="--contend must be at least 1"):
        run_contention(contend=0)
