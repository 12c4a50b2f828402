"""What each pretraining step draws: one modality per stage-1 step; a paired task's two modalities on
the same rows, or (``pairs: any``) two unrelated modalities on as many rows each, per stage-2 step."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models.masked import MaskedModeling
from highmodal.models.registry import create_model
from highmodal.training.pretrain import StageConfig, UnitSampler, run_stage, stage1_units, stage2_units
from highmodal.training.resume import TrainingDiverged


@pytest.fixture(scope="module")
def suite():
    return build_suite([{"name": "digits", "source": "sklearn_digits"},
                        {"name": "motions", "source": "basic_motions"},
                        {"name": "cancer", "source": "breast_cancer"}], LoadContext(seed=0))


def draw(unit, size):
    """The pieces of one step of ``unit``."""
    return next(UnitSampler([unit], size, 1).epoch(np.random.default_rng(0)))


def test_stage1_one_unit_per_modality(suite):
    units = stage1_units(suite, StageConfig())
    assert sorted(m for (unit,) in units for m in [unit[1]]) == ["accelerometer", "cell_nuclei", "digit_pixels",
                                                                   "gyroscope"]
    only = stage1_units(suite, StageConfig(tasks=["motions"]))
    assert {u[0][1] for u in only} == {"accelerometer", "gyroscope"}


def test_stage2_pairs(suite):
    paired = stage2_units(suite, StageConfig())
    assert [(a[1], b[1]) for a, b in paired] == [("accelerometer", "gyroscope")]
    pa, pb = draw(paired[0], 8)
    assert pa.batch is pb.batch and len(pa.batch["target"]) == 8 and pa.rows == pb.rows  # same rows: a true pair
    anything = stage2_units(suite, StageConfig(pairs="any"))
    assert len(anything) == 6  # the paired one + the 5 other pairs of 4 modalities
    cross = next(u for u in anything if {u[0][1], u[1][1]} == {"digit_pixels", "cell_nuclei"})
    pa, pb = draw(cross, 500)
    ba, bb = pa.batch, pb.batch
    assert pa.rows != pb.rows and len(ba["target"]) == len(bb["target"]) == min(len(cross[0][0]), len(cross[1][0]))
    assert "cell_nuclei" not in ba and "digit_pixels" not in bb
    filtered = stage2_units(suite, StageConfig(keep_target={"motions": 0}))
    assert torch.all(filtered[0][0][0].y == 0)


def test_stage_errors(suite):
    with pytest.raises(HighmodalError, match="pairs 'all' is not one of paired, any"):
        StageConfig(pairs="all")
    with pytest.raises(HighmodalError, match=r"pretrain.stage2: unknown task 'motion'"):
        stage2_units(suite, StageConfig(tasks=["motion"]))


def stage(suite, units, steps, number=1, counter=None, log_every=4, run_dir=None, resume=False, amp=None):
    torch.manual_seed(0)
    model = create_model("omnivec2", suite.specs, [td.task for td in suite], preset="tiny")
    mm = MaskedModeling(model, sorted({m for unit in units for _, m in unit}))
    with counter or contextlib.nullcontext():
        run_stage(mm, units, StageConfig(steps=steps, batch_size=4), number, 0, log_every, run_dir, lambda _: None,
                  False, resume, amp)
    return mm


@pytest.mark.parametrize("number", [1, 2])
def test_stage_steps_do_not_wait_for_the_device(suite, stall_counter, number):
    """What would stall a GPU (see ``StallCounter``) happens once per log record (a Trainer epoch:
    the losses read, each stream's row permutation sent to the device), never per step."""
    units = (stage1_units if number == 1 else stage2_units)(suite, StageConfig(pairs="any"))
    counts = {}
    for steps in (8, 16):  # twice the steps, the same two log records
        counter = stall_counter()
        stage(suite, units, steps, number, counter, log_every=steps // 2)
        counts[steps] = counter.counts
    assert counts[8] and counts[16] == counts[8], counts


def test_a_non_finite_loss_names_the_modality_and_step(suite):
    units = stage1_units(suite, StageConfig(tasks=["digits"]))
    tensors = units[0][0][0]
    tensors.inputs["digit_pixels"] = torch.full_like(tensors.inputs["digit_pixels"], float("nan"))  # a copy
    with pytest.raises(TrainingDiverged, match=r"non-finite loss in modality digit_pixels at pretrain stage 1, "
                                               r"epoch 1, step 1, batch digit_pixels#1$"):
        stage(suite, units, 4)


def test_a_suite_file_beside_the_config_is_read_without_a_suffix(tmp_path):
    import yaml

    from highmodal.experiments.pretraining import PretrainConfig, pretraining_suite

    suite = {"name": "mine", "seed": 0, "tasks": [{"name": "digits", "source": "sklearn_digits"}],
             "models": [{"label": "ov", "model": {"name": "omnivec2", "preset": "tiny"}}]}
    (tmp_path / "mysuite").write_text(yaml.safe_dump(suite))
    exp, folder, data = pretraining_suite(PretrainConfig(suite="mysuite", model="ov"), tmp_path, None)
    assert folder == tmp_path and [td.task.name for td in data] == ["digits"] and exp.model.name == "omnivec2"


def test_a_stage_trains_in_bf16_through_the_trainer(suite, tmp_path, monkeypatch):
    """``amp: bf16`` reaches the stage's forward: the losses are computed under autocast."""
    from highmodal.models.masked import MaskedModeling as MM

    dtypes = []
    loss = MM.stage1_loss
    monkeypatch.setattr(MM, "stage1_loss", lambda self, b, m: dtypes.append(torch.get_autocast_dtype("cpu"))
                        or dtypes.append(torch.is_autocast_enabled("cpu")) or loss(self, b, m))
    units = stage1_units(suite, StageConfig(tasks=["digits"]))
    stage(suite, units, 4, run_dir=tmp_path, amp="bf16")
    assert dtypes[:2] == [torch.bfloat16, True]
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 4 and all(np.isfinite(v) for v in record["train_loss"].values())


def test_task_options_of_the_pretraining_config_update_the_suite_entrys_views(tmp_path):
    import yaml

    from highmodal.experiments.pretraining import PretrainConfig, pretraining_suite

    suite = {"name": "mine", "seed": 0, "tasks": [{"name": "digits", "source": "sklearn_digits"},
                                                   {"name": "cancer", "source": "breast_cancer"}],
             "models": [{"label": "ov", "model": {"name": "omnivec2", "preset": "tiny"},
                         "task_options": {"digits": {"shots": 30}}}]}
    (tmp_path / "mysuite.yaml").write_text(yaml.safe_dump(suite))
    cfg = PretrainConfig(suite="mysuite.yaml", model="ov", task_options={"cancer": {"shots": 20}})
    exp, _, data = pretraining_suite(cfg, tmp_path, None)
    assert [t.get("shots") for t in exp.tasks] == [30, 20]
    cancer = next(td for td in data if td.task.name == "cancer")
    assert len(cancer.splits["train"].y) == 40  # 20 per class
