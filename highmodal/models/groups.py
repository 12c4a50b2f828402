"""Parameter groups for heterogeneity-aware HighMMT (§2.2, Appendix B.6).

A *unimodal unit* is one modality of one task (``"task/modality"``), a *crossmodal unit* one
unordered modality pair of a multimodal task (``"task/a+b"``, in the task's modality order). The
paper groups units so that similar ones share an encoder (crossmodal block) and dissimilar ones do
not; a grouping maps each unit to a group index ``0..k-1``, unlisted units belonging to group 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import combinations

from torch import nn

from highmodal.errors import HighmodalError, did_you_mean
from highmodal.tasks import Task


def unimodal_units(tasks: Sequence[Task]) -> list[str]:
    return [f"{t.name}/{m}" for t in tasks for m in t.modalities]


def crossmodal_units(tasks: Sequence[Task]) -> list[str]:
    return [f"{t.name}/{a}+{b}" for t in tasks for a, b in combinations(t.modalities, 2)]


def check_groups(groups: Mapping[str, int], units: Sequence[str], field: str) -> int:
    """Validate a grouping against the model's units; return the number of groups ``k``."""
    for unit, g in groups.items():
        if unit not in units:
            raise HighmodalError(f"model.{field}: unknown unit {unit!r}{did_you_mean(unit, units)}; "
                                 f"units are 'task/modality'{' or task/a+b' if '+' in ''.join(units) else ''}")
        if isinstance(g, bool) or not isinstance(g, int) or g < 0:
            raise HighmodalError(f"model.{field}[{unit!r}]: expected a group index >= 0, got {g!r}")
    used = {groups.get(u, 0) for u in units} or {0}  # no units: the shared module alone
    k = max(used) + 1
    missing = sorted(set(range(k)) - used)
    if missing:
        raise HighmodalError(f"model.{field}: group(s) {missing} have no unit; number groups 0..k-1 without gaps")
    return k


def initialise_from(model: nn.Module, source: nn.Module, where: str = "--init",
                    untrained: Sequence[str] = ()) -> list[str]:
    """Copy ``source``'s weights into ``model``: same-named tensors first, else the shared encoder /
    crossmodal block into each group copy, so heterogeneity-aware fine-tuning starts from the
    homogeneous model (Appendix B.6). Tensors the source lacks (e.g. a new task's head) or never
    trained (under an ``untrained`` prefix, e.g. a pretrained model's task heads) keep their fresh
    initialisation and are returned."""
    src, state = source.state_dict(), model.state_dict()
    fresh = []
    for key, value in state.items():
        origin = key if key in src else _SHARED.sub(lambda m: m["kind"], key)
        if origin not in src or any(origin == p or origin.startswith(f"{p}.") for p in untrained):
            fresh.append(key)
            continue
        if src[origin].shape != value.shape:
            raise HighmodalError(f"{where}: {origin} has shape {tuple(src[origin].shape)} in the source model but "
                                 f"{tuple(value.shape)} here; the modalities or the architecture differ")
        state[key] = src[origin]
    if len(fresh) == len(state):
        raise HighmodalError(f"{where}: no weight of the source model fits this model")
    model.load_state_dict(state)
    return fresh


_SHARED = re.compile(r"^group_(?P<kind>encoder|crossmodal)s\.\d+")
