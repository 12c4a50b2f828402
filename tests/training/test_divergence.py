"""Non-finite losses and gradients stop training with a message naming the task, step and
micro-batch, read from device flags without a host sync per step: a train step's operations that
would stall a GPU (reading a device value, copying host data in) do not grow with the step count."""

import pytest
import torch

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.models import create_model
from highmodal.training.divergence import FiniteWatch
from highmodal.training.resume import TrainingDiverged
from highmodal.training.trainer import Trainer

FINITE = torch.tensor(1.0)


def flags(*rows):
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize(("losses", "norm", "message"), [
    (flags([0, 1, 1]), FINITE, "non-finite loss in task b at step 3$"),
    (flags([1, 1, 1]), FINITE, "non-finite loss in task a, b at step 3$"),
    (flags([0, 0, 1]), FINITE, "non-finite loss in the summed loss at step 3$"),
    (flags([0, 0, 0], [1, 0, 1]), FINITE, r"non-finite loss in task a at step 3 \(micro-batch 2/2\)$"),
    (flags([0, 0, 0]), torch.tensor(float("nan")), "non-finite gradients from tasks a, b at step 3$"),
])
def test_the_message_names_what_went_wrong(losses, norm, message):
    watch = FiniteWatch(torch.device("cpu"))
    watch.add("step 3", ["a", "b"], losses, norm)
    with pytest.raises(TrainingDiverged, match=message):
        watch.poll()
    assert not watch.pending


def test_flags_are_read_lag_steps_later_and_all_before_a_save():
    watch = FiniteWatch(torch.device("cpu"))
    watch.lag = 2  # as on a GPU
    watch.add("step 1", ["a"], flags([1, 1]), FINITE)
    watch.poll()  # step 1's flags may still be in flight: not read yet
    watch.add("step 2", ["a"], flags([0, 0]), FINITE)
    watch.poll()
    assert len(watch.pending) == 2
    watch.add("step 3", ["a"], flags([0, 0]), FINITE)
    with pytest.raises(TrainingDiverged, match=r"task a at step 1$"):  # the first bad step, not the latest
        watch.poll()
    watch.add("step 4", ["a"], flags([0, 0]), torch.tensor(float("inf")))
    with pytest.raises(TrainingDiverged, match="gradients from tasks a at step 4"):
        watch.drain()




@pytest.mark.parametrize("model", ["highmmt", "omnivec2"])
def test_training_steps_do_not_wait_for_the_device(model, stall_counter):
    suite = build_suite([{"name": "digits", "source": "sklearn_digits"},
                         {"name": "motions", "source": "basic_motions"}], LoadContext(seed=0))
    counts = {}
    for batch_size in (64, 32):  # twice the steps in the second run
        torch.manual_seed(0)
        net = create_model(model, suite.specs, [td.task for td in suite], preset="tiny")
        trainer = Trainer(net, suite, TrainConfig(epochs=1, batch_size=batch_size, grad_accum=2), progress=False)
        with stall_counter() as counter:
            trainer.fit()
        counts[batch_size] = (trainer.total_steps, counter.counts)
    (steps64, stalls64), (steps32, stalls32) = counts[64], counts[32]
    assert steps32 > 1.5 * steps64
    assert stalls32 == stalls64  # per epoch (evaluation, logging), never per step
