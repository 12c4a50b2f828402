"""How long a run trains: ``train.epochs`` when given; otherwise 30 epochs, or enough for
``train.min_steps`` optimizer steps on small data, and the learning-rate schedule spans them."""

import pytest
import torch

from highmodal.config import AUTO_EPOCHS, TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.training.trainer import Trainer


def test_epochs_for_a_given_length_of_epoch():
    assert TrainConfig().epochs_for(2) == 1500  # 3,000 steps at 2 steps per epoch
    assert TrainConfig().epochs_for(1000) == AUTO_EPOCHS  # large data: the floor of 30 epochs
    assert TrainConfig(min_steps=0).epochs_for(1) == AUTO_EPOCHS
    assert TrainConfig(epochs=5).epochs_for(2) == 5  # an explicit length is used as is
    assert TrainConfig(epochs=20).length() == "20 epochs"
    assert TrainConfig().length() == "at least 30 epochs and 3,000 steps"  # what reports say of the rule
    with pytest.raises(HighmodalError, match=r"train.min_steps: value -1 is out of range"):
        TrainConfig(min_steps=-1)


def test_a_small_task_trains_until_min_steps_and_the_schedule_spans_them(tmp_path):
    suite = build_suite([{"name": "cancer", "source": "breast_cancer"}], LoadContext(seed=0))
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny")
    trainer = Trainer(model, suite, TrainConfig(min_steps=80, batch_size=256), progress=False)
    per_epoch = len(trainer.sampler)  # a few hundred training rows: 2 batches
    assert per_epoch == 2 and trainer.epochs == 40 and trainer.total_steps == 80
    out = trainer.fit()
    assert out["epochs"] == 40 and 1 <= out["best_epoch"] <= 40
    assert trainer.scheduler.last_epoch == 80  # the cosine decay ran to its end over all 40 epochs
