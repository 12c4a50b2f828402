"""``train.amp: bf16`` runs each step's forward in bf16 with fp32 weights; ``train.compile`` compiles
the model's step in place, and a compiled step computes what the eager one does."""

import pytest
import torch

from highmodal.bench.speed import get_workload, synthetic_batches
from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.models import create_model
from highmodal.models.base import Piece
from highmodal.training.trainer import Trainer


@pytest.fixture(scope="module")
def suite():
    return build_suite([{"name": "digits", "source": "sklearn_digits"},
                        {"name": "motions", "source": "basic_motions"}], LoadContext(seed=0))


def _trainer(suite, model, **train):
    torch.manual_seed(0)
    net = create_model(model, suite.specs, [td.task for td in suite], preset="tiny")
    return Trainer(net, suite, TrainConfig(epochs=1, batch_size=64, **train), progress=False)


@pytest.mark.parametrize("model", ["highmmt", "omnivec2"])
def test_bf16_autocast_trains_in_bf16_and_keeps_fp32_weights(suite, model):
    trainer = _trainer(suite, model, amp="bf16")
    seen = set()
    linears = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)]
    hooks = [m.register_forward_hook(lambda m, i, out: seen.add(out.dtype) if m.training else None)
             for m in linears]
    result = trainer.fit()
    for h in hooks:
        h.remove()
    assert seen == {torch.bfloat16}  # every training-step matmul ran in bf16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert result["best_val_score"] == result["best_val_score"]  # a number, not NaN


@pytest.mark.parametrize("workload", ["highmmt-4task", "omnivec2-pair"])
def test_a_compiled_step_computes_what_the_eager_step_does(workload):
    from dataclasses import replace

    spec = replace(get_workload(workload), preset="tiny")
    batches, _ = synthetic_batches(spec, 3, torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model(spec.model, spec.specs, spec.tasks, preset="tiny", **spec.overrides).eval()
    pieces = [Piece(t.name, None, batches[t.name]) for t in spec.tasks]
    with torch.no_grad():
        eager = model.step_outputs(pieces)
        keys = set(model.state_dict())
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model.compile_step(backend="eager")  # dynamo's graph capture, without inductor's compile time
        compiled = model.step_outputs(pieces)
    assert set(model.state_dict()) == keys  # checkpoints keep their keys
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # graphs were captured, not skipped


def test_train_compile_compiles_the_step(suite, monkeypatch):
    calls = []
    monkeypatch.setattr("highmodal.models.highmmt.HighMMT.compile_step", lambda self, **o: calls.append(self))
    trainer = _trainer(suite, "highmmt", compile=True)
    assert calls == [trainer.model]


@pytest.mark.slow
def test_compiled_training_with_inductor(suite):
    trainer = _trainer(suite, "highmmt", compile=True)
    result = trainer.fit()
    assert result["best_val_score"] == result["best_val_score"]
