"""What each pretraining step draws: one modality per stage-1 step; a paired task's two modalities on
the same rows, or (``pairs: any``) two unrelated modalities on as many rows each, per stage-2 step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.training.pretrain import StageConfig, draw_batches, stage1_units, stage2_units


@pytest.fixture(scope="module")
def suite():
    return build_suite([{"name": "digits", "source": "sklearn_digits"},
                        {"name": "motions", "source": "basic_motions"},
                        {"name": "cancer", "source": "breast_cancer"}], LoadContext(seed=0))


def test_stage1_one_unit_per_modality(suite):
    units = stage1_units(suite, StageConfig())
    assert sorted(m for (unit,) in units for m in [unit[1]]) == ["accelerometer", "cell_nuclei", "digit_pixels",
                                                                   "gyroscope"]
    only = stage1_units(suite, StageConfig(tasks=["motions"]))
    assert {u[0][1] for u in only} == {"accelerometer", "gyroscope"}


def test_stage2_pairs(suite):
    paired = stage2_units(suite, StageConfig())
    assert [(a[1], b[1]) for a, b in paired] == [("accelerometer", "gyroscope")]
    rng = np.random.default_rng(0)
    ba, bb = draw_batches(paired[0], 8, rng)
    assert ba is bb and len(ba["target"]) == 8  # same rows: a true pair
    anything = stage2_units(suite, StageConfig(pairs="any"))
    assert len(anything) == 6  # the paired one + the 5 other pairs of 4 modalities
    cross = next(u for u in anything if {u[0][1], u[1][1]} == {"digit_pixels", "cell_nuclei"})
    ba, bb = draw_batches(cross, 500, rng)
    assert len(ba["target"]) == len(bb["target"]) == min(len(cross[0][0]), len(cross[1][0]))
    assert "cell_nuclei" not in ba and "digit_pixels" not in bb
    filtered = stage2_units(suite, StageConfig(keep_target={"motions": 0}))
    assert torch.all(filtered[0][0][0].y == 0)


def test_stage_errors(suite):
    with pytest.raises(HighmodalError, match="pairs 'all' is not one of paired, any"):
        StageConfig(pairs="all")
    with pytest.raises(HighmodalError, match=r"pretrain.stage2: unknown task 'motion'"):
        stage2_units(suite, StageConfig(tasks=["motion"]))
