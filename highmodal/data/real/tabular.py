"""Tabular shared datasets: UCI Adult (census income >50K), on its official train/test split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import carve
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData

ADULT_FILES = ["adult.data", "adult.test"]
# The 14 attributes in adult.names order; True marks the continuous ones.
ADULT_COLUMNS = (
    ("age", True), ("workclass", False), ("fnlwgt", True), ("education", False), ("education_num", True),
    ("marital_status", False), ("occupation", False), ("relationship", False), ("race", False), ("sex", False),
    ("capital_gain", True), ("capital_loss", True), ("hours_per_week", True), ("native_country", False),
)
ADULT_CLASSES = ("<=50K", ">50K")


@dataclass
class AdultOptions:
    """``val_frac``: share of the official training file held out (stratified) for validation."""

    val_frac: float = 0.1


def _read_adult(path: Path, skip: int) -> pd.DataFrame:
    """All 15 fields as stripped strings (``?`` and every category kept verbatim, no NA guessing);
    labels lose the trailing ``.`` that adult.test puts on them."""
    names = [c for c, _ in ADULT_COLUMNS] + ["income"]
    try:
        table = pd.read_csv(path, header=None, names=names, skiprows=skip, skipinitialspace=True, dtype=str,
                            keep_default_na=False, skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise HighmodalError(f"{path}: cannot read the comma-separated records ({e})") from None
    table["income"] = table["income"].str.strip().str.removesuffix(".")
    bad = ~table["income"].isin(ADULT_CLASSES)
    if bad.any():
        raise HighmodalError(f"{path}: record {int(np.flatnonzero(bad)[0]) + 1 + skip} has income "
                             f"{table['income'][bad].iloc[0]!r}, expected one of {ADULT_CLASSES}")
    return table


def _encode(table: pd.DataFrame, categories: dict[str, list[str]], path: Path) -> np.ndarray:
    """``(N, 14, 1)`` float32: numbers as they are; categories as their index in the training
    split's sorted list, categories absent from it as one reserved code past the end."""
    cols = []
    for name, numeric in ADULT_COLUMNS:
        if numeric:
            values = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)
            if np.isnan(values).any():
                row = int(np.flatnonzero(np.isnan(values))[0])
                raise HighmodalError(f"{path}: column {name!r} of record {row + 1} is not a number "
                                     f"({table[name].iloc[row]!r})")
        else:
            lookup = {c: float(i) for i, c in enumerate(categories[name])}
            values = table[name].map(lookup).fillna(float(len(lookup))).to_numpy(np.float64)
        cols.append(values)
    return np.stack(cols, axis=1).astype(np.float32)[..., None]


@register_loader(
    "adult", AdultOptions, ("tabular",),
    "UCI Adult census records: income >50K from 14 attributes (official 32,561/16,281 split)",
    shared_available("uci_adult", ADULT_FILES),
)
def adult(opts: AdultOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Income >50K (24 % positive) from the 14 census attributes, one token per column.

    The official split is kept (adult.data → train + a stratified, seeded validation part; adult.test
    → test) so accuracy compares with the error rates listed in adult.names (C4.5 15.54 %, NBTree
    14.10 %; those runs dropped records with unknowns, we keep them). adult.test's first line is not
    a record (the UCI file has a ``|1x3 Cross validator`` banner; this copy a header), so it is skipped.

    Categorical columns become ordinal codes by the sorted categories of adult.data: a single
    number per column keeps one token per column (HighMMT's table format) without a one-hot that
    would blow up the channel width for native_country's 42 values. ``?`` (unknown) is a category of
    its own, since unknowns are not missing at random; a test category unseen in training gets one
    reserved code instead of failing. Numbers are kept as recorded; every column is then normalised
    element-wise with training statistics, which puts ages, weights and codes on one scale.
    """
    folder = require_root(ctx, "uci_adult")
    sums = verified_files(ctx, "uci_adult", ADULT_FILES)

    def build() -> dict[str, np.ndarray]:
        train = _read_adult(folder / "adult.data", 0)
        test = _read_adult(folder / "adult.test", 1)
        categories = {c: sorted(train[c].unique().tolist()) for c, numeric in ADULT_COLUMNS if not numeric}
        return {
            "x_train": _encode(train, categories, folder / "adult.data"),
            "y_train": (train["income"] == ADULT_CLASSES[1]).to_numpy(np.int64),
            "x_test": _encode(test, categories, folder / "adult.test"),
            "y_test": (test["income"] == ADULT_CLASSES[1]).to_numpy(np.int64),
        }

    arrays = cached_arrays("adult", sums, {"columns": ADULT_COLUMNS}, build)
    train, val = carve(SplitData({"census": arrays["x_train"]}, arrays["y_train"]), opts.val_frac, ctx.seed,
                       stratify=True)
    splits = {"train": train, "val": val, "test": SplitData({"census": arrays["x_test"]}, arrays["y_test"])}
    task = make_task(entry, ["census"], "classification", 2, ADULT_CLASSES,
                     "income >50K from 14 census attributes (one token per column)")
    td = TaskData(replace(task, metric=entry.metric or "accuracy"),
                  {"census": spec("census", "tabular", (len(ADULT_COLUMNS), 1))}, splits, str(folder))
    return fit_normalization(td, {"census": "element"})
