"""What each pretraining step draws: one modality per stage-1 step; a paired task's two modalities on
the same rows, or (``pairs: any``) two unrelated modalities on as many rows each, per stage-2 step."""

from __future__ import annotations

import contextlib

import pytest
import torch

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models.masked import MaskedModeling
from highmodal.models.registry import create_model
from highmodal.training.pretrain import StageConfig, draw_batches, run_stage, stage1_units, stage2_units
from highmodal.training.resume import TrainingDiverged


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
    gen = torch.Generator().manual_seed(0)
    ba, bb = draw_batches(paired[0], 8, gen)
    assert ba is bb and len(ba["target"]) == 8  # same rows: a true pair
    anything = stage2_units(suite, StageConfig(pairs="any"))
    assert len(anything) == 6  # the paired one + the 5 other pairs of 4 modalities
    cross = next(u for u in anything if {u[0][1], u[1][1]} == {"digit_pixels", "cell_nuclei"})
    ba, bb = draw_batches(cross, 500, gen)
    assert len(ba["target"]) == len(bb["target"]) == min(len(cross[0][0]), len(cross[1][0]))
    assert "cell_nuclei" not in ba and "digit_pixels" not in bb
    filtered = stage2_units(suite, StageConfig(keep_target={"motions": 0}))
    assert torch.all(filtered[0][0][0].y == 0)


def test_stage_errors(suite):
    with pytest.raises(HighmodalError, match="pairs 'all' is not one of paired, any"):
        StageConfig(pairs="all")
    with pytest.raises(HighmodalError, match=r"pretrain.stage2: unknown task 'motion'"):
        stage2_units(suite, StageConfig(tasks=["motion"]))


def stage(suite, units, steps, tmp_path, number=1, counter=None):
    torch.manual_seed(0)
    model = create_model("omnivec2", suite.specs, [td.task for td in suite], preset="tiny")
    mm = MaskedModeling(model, sorted({m for unit in units for _, m in unit}))
    with counter or contextlib.nullcontext():
        return run_stage(mm, units, StageConfig(steps=steps, batch_size=16), number, 0, 4,
                         tmp_path / f"m{steps}.jsonl", lambda _: None, False)


@pytest.mark.parametrize("number", [1, 2])
def test_stage_steps_do_not_wait_for_the_device(suite, tmp_path, stall_counter, number):
    """What would stall a GPU (see ``StallCounter``) happens only when a log record is written."""
    units = (stage1_units if number == 1 else stage2_units)(suite, StageConfig(pairs="any"))
    counts = {}
    for steps in (8, 16):  # twice the steps and twice the log records (every 4 steps)
        counter = stall_counter()
        stage(suite, units, steps, tmp_path, number, counter)
        counts[steps] = counter.counts
    logging = "/training/pretrain.py"
    assert counts[8] and all(logging in k for k in counts[8]), counts[8]  # the losses read for the log
    assert counts[16] == {k: 2 * v for k, v in counts[8].items()}, counts


def test_a_non_finite_loss_names_the_modality_task_and_step(suite, tmp_path):
    units = stage1_units(suite, StageConfig(tasks=["digits"]))
    tensors = units[0][0][0]
    tensors.inputs["digit_pixels"] = torch.full_like(tensors.inputs["digit_pixels"], float("nan"))  # a copy
    with pytest.raises(TrainingDiverged, match=r"non-finite loss in modality digit_pixels at pretrain stage 1, "
                                               r"step 1 \(task digits\); lower the learning rate$"):
        stage(suite, units, 4, tmp_path)


def test_a_suite_file_beside_the_config_is_read_without_a_suffix(tmp_path):
    import yaml

    from highmodal.experiments.pretraining import PretrainConfig, pretraining_suite

    suite = {"name": "mine", "seed": 0, "tasks": [{"name": "digits", "source": "sklearn_digits"}],
             "models": [{"label": "ov", "model": {"name": "omnivec2", "preset": "tiny"}}]}
    (tmp_path / "mysuite").write_text(yaml.safe_dump(suite))
    exp, folder, data = pretraining_suite(PretrainConfig(suite="mysuite", model="ov"), tmp_path, None)
    assert folder == tmp_path and [td.task.name for td in data] == ["digits"] and exp.model.name == "omnivec2"
