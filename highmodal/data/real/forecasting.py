"""Forecasting shared datasets: ETT (Electricity Transformer Temperature, hourly), cast as regression
of the next ``horizon`` oil-temperature values from a multivariate look-back window."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData

ETT_FILES = ("ETTh1", "ETTh2")
ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
# Informer's Dataset_ETT_hour: 12 months train, 4 validation, 4 test, months of 30 days of 24 rows.
MONTH = 30 * 24
BORDERS = (12 * MONTH, 16 * MONTH, 20 * MONTH)


@dataclass
class ETTOptions:
    """``file``: ETTh1 or ETTh2. ``window``: look-back rows (Informer's ``seq_len``); ``horizon``:
    future OT rows to predict (``pred_len``). ``stride`` thins the *training* windows only, so
    validation and test always score every window as the papers do."""

    file: str = "ETTh1"
    window: int = 96
    horizon: int = 24
    stride: int = 1


def _read_ett(path: Path) -> np.ndarray:
    """The seven variables as ``(rows, 7)`` float64, in the file's column order (OT last)."""
    try:
        table = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise HighmodalError(f"{path}: cannot read the CSV ({e})") from None
    if tuple(table.columns) != ("date", *ETT_COLUMNS):
        raise HighmodalError(f"{path}: expected the columns date,{','.join(ETT_COLUMNS)}; "
                             f"found {','.join(map(str, table.columns))}")
    if len(table) < BORDERS[-1]:
        raise HighmodalError(f"{path}: {len(table)} rows, but the 12/4/4-month protocol needs {BORDERS[-1]}")
    try:
        values = table[list(ETT_COLUMNS)].to_numpy(np.float64)
    except (ValueError, TypeError) as e:
        raise HighmodalError(f"{path}: a variable column holds a non-number ({e})") from None
    if not np.isfinite(values).all():
        raise HighmodalError(f"{path}: the variables contain empty, NaN or infinite values")
    return values


def _windows(z: np.ndarray, start: int, stop: int, window: int, horizon: int, stride: int) -> SplitData:
    """Every ``stride``-th window whose *targets* lie in rows ``[start, stop)``: inputs may reach
    back ``window`` rows before ``start`` (into the previous split), as in Informer's code."""
    seg = z[max(start - window, 0) : stop]
    n = len(seg) - window - horizon + 1
    first = np.arange(0, n, stride)
    x = np.lib.stride_tricks.sliding_window_view(seg, window, axis=0)[first].transpose(0, 2, 1)
    ot = np.lib.stride_tricks.sliding_window_view(seg[window:, -1], horizon)[first]
    return SplitData({"ett_history": np.ascontiguousarray(x, np.float32)}, np.ascontiguousarray(ot, np.float32))


@register_loader(
    "ett", ETTOptions, ("time_series",),
    "ETTh1/ETTh2 hourly transformer data: next `horizon` OT values from 96 h of all 7 variables (Informer split)",
    shared_available("ett_small", [f"{n}.csv" for n in ETT_FILES]),
)
def ett(opts: ETTOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """The standard long-horizon protocol of Informer (Zhou et al., AAAI 2021), kept by Autoformer,
    PatchTST and others so numbers are comparable: rows [0, 8640) train, [8640, 11520) validation,
    [11520, 14400) test (the remaining 3,020 rows are unused by that protocol); every variable
    z-scored with the training rows' mean and (population) std; each split's windows start
    ``window`` rows before its border so the first target is the border row. The "MS" setting:
    all 7 variables in, oil temperature (OT) out, ``horizon`` steps at once. Targets stay on the
    z-scored scale, so MSE/MAE match the papers' tables; MSE is primary, as they report it first.
    The input is already standardised, so the spec carries no statistics.
    """
    if opts.file not in ETT_FILES:
        raise HighmodalError(f"ett: file {opts.file!r} is not one of {', '.join(ETT_FILES)}")
    for key in ("window", "horizon", "stride"):
        if getattr(opts, key) < 1:
            raise HighmodalError(f"ett: {key} must be >= 1, got {getattr(opts, key)}")
    if opts.window + opts.horizon > BORDERS[1] - BORDERS[0]:
        raise HighmodalError(f"ett: window + horizon must fit in the {BORDERS[1] - BORDERS[0]} validation rows")
    folder = require_root(ctx, "ett_small")
    name = f"{opts.file}.csv"
    sums = verified_files(ctx, "ett_small", [name])

    def build() -> dict[str, np.ndarray]:
        values = _read_ett(folder / name)[: BORDERS[-1]]
        train = values[: BORDERS[0]]
        return {"z": ((values - train.mean(axis=0)) / train.std(axis=0)).astype(np.float32)}

    z = cached_arrays("ett", sums, {"file": opts.file, "borders": BORDERS}, build)["z"]
    w, h = opts.window, opts.horizon
    splits = {"train": _windows(z, 0, BORDERS[0], w, h, opts.stride),
              "val": _windows(z, BORDERS[0], BORDERS[1], w, h, 1),
              "test": _windows(z, BORDERS[1], BORDERS[2], w, h, 1)}
    task = make_task(entry, ["ett_history"], "regression", h, (),
                     f"{opts.file}: next {h} hourly OT values (z-scored) from {w} hours of 7 variables")
    td = TaskData(replace(task, metric=entry.metric or "mse", forecast=("ett_history", len(ETT_COLUMNS) - 1)),
                  {"ett_history": spec("ett_history", "time_series", (w, len(ETT_COLUMNS)))}, splits,
                  str(folder / name))
    return fit_normalization(td, {"ett_history": "none"})
