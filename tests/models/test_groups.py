"""Heterogeneity-aware parameter groups: one encoder / crossmodal copy per group, initialised from
the shared model so that grouped fine-tuning starts exactly where homogeneous training ended."""

from __future__ import annotations

import re

import pytest
import torch

from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.models.groups import crossmodal_units, initialise_from, unimodal_units
from tests.models.test_highmmt import _paper_specs, _paper_tasks

UNI = {"avmnist/image": 1, "avmnist/audio": 1, "mosei/f3": 2, "humor/f3": 2}
CROSS = {"avmnist/image+audio": 1, "mosei/f1+f3": 1}


def batch(spec_names: tuple[str, ...], b: int = 3) -> dict[str, torch.Tensor]:
    specs = {s.name: s for s in _paper_specs()}
    g = torch.Generator().manual_seed(0)
    return {n: torch.randn((b, *specs[n].shape), generator=g) for n in spec_names}


def build(**groups) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("highmmt", _paper_specs(), _paper_tasks(), preset="tiny", **groups)


def test_units_are_named_by_task_and_modality():
    tasks = _paper_tasks()
    assert unimodal_units(tasks)[:3] == ["mimic/static", "mimic/timeseries", "avmnist/image"]
    assert "mosei/f1+f3" in crossmodal_units(tasks) and len(crossmodal_units(tasks)) == 1 + 1 + 3 + 3


def test_each_group_adds_exactly_one_module_copy():
    shared, grouped = build(), build(unimodal_groups=UNI, crossmodal_groups=CROSS)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    enc, cross = count(shared.encoder), count(shared.crossmodal)
    assert count(grouped) == count(shared) + 2 * enc + 1 * cross


def test_grouped_model_starts_where_the_shared_model_ended():
    shared, grouped = build(), build(unimodal_groups=UNI, crossmodal_groups=CROSS)
    assert initialise_from(grouped, shared) == []
    shared.eval(), grouped.eval()
    for t in _paper_tasks():
        x = batch(t.modalities)
        torch.testing.assert_close(grouped(x, t.name), shared(x, t.name))
    with torch.no_grad():  # moving group 2's encoder changes exactly the tasks that use it
        for p in grouped.group_encoders[1].parameters():
            p.add_(0.1)
    moved = {t.name for t in _paper_tasks()
             if not torch.allclose(grouped(batch(t.modalities), t.name), shared(batch(t.modalities), t.name))}
    assert moved == {"mosei", "humor"}


def test_group_copies_train_apart():
    grouped = build(unimodal_groups=UNI)
    initialise_from(grouped, build())
    x = batch(("image", "audio"))
    grouped(x, "avmnist").sum().backward()
    assert all(p.grad is None for p in grouped.encoder.parameters())
    assert any(p.grad is not None for p in grouped.group_encoders[0].parameters())


@pytest.mark.parametrize("groups,needle", [
    ({"unimodal_groups": {"avmnist/imag": 1}}, "did you mean 'avmnist/image'"),
    ({"unimodal_groups": {"avmnist/image": 2}}, "group(s) [1] have no unit"),
    ({"crossmodal_groups": {"mosei/f1+f3": -1}}, "expected a group index >= 0"),
])
def test_bad_groups_are_named(groups, needle):
    with pytest.raises(HighmodalError, match=re.escape(needle)):
        build(**groups)


def test_init_refuses_a_model_of_other_modalities():
    other = create_model("highmmt", _paper_specs()[:4], _paper_tasks()[:2], preset="tiny")
    with pytest.raises(HighmodalError, match=r"shape .* in the source model"):
        initialise_from(build(), other)
