"""Clinical shared datasets: the PhysioNet/CinC Challenge 2012 ICU stays, as two modalities of the
same stays (vital-sign/lab time series and static admission descriptors), predicting in-hospital death.
"""

from __future__ import annotations

import io
import tarfile
import zlib
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

PHYSIONET_FILES = ["set-a.tar.gz", "set-b.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt"]
HOURS = 48
# General descriptors recorded once on admission (challenge page). Weight is both a descriptor (its
# first 00:00 row) and a time series (later measurements), so it appears in both lists.
DESCRIPTORS = ("RecordID", "Age", "Gender", "Height", "ICUType")
SERIES_VARIABLES = (
    "ALP", "ALT", "AST", "Albumin", "BUN", "Bilirubin", "Cholesterol", "Creatinine", "DiasABP", "FiO2", "GCS",
    "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "MAP", "MechVent", "Mg", "NIDiasABP", "NIMAP", "NISysABP",
    "Na", "PaCO2", "PaO2", "Platelets", "RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT", "Urine",
    "WBC", "Weight", "pH",
)
# ICUType codes 1..4 of the challenge page.
ICU_TYPES = ("coronary_care", "cardiac_surgery_recovery", "medical", "surgical")
STATIC_COLUMNS = ("age", "gender", "gender_missing", "height", "height_missing", "weight", "weight_missing",
                  *(f"icu_{t}" for t in ICU_TYPES))
# Percentiles of the training values that every value is clipped to before z-scoring.
CLIP_PERCENTILES = (0.5, 99.5)


@dataclass
class PhysioNetOptions:
    """``val_frac``: share of set-a held out (stratified) for validation; set-b is the test split."""

    val_frac: float = 0.2


def _read_archive(path: Path, first_stay: int) -> tuple[list[str], pd.DataFrame]:
    """All stays of one ``set-?.tar.gz`` parsed by a single ``read_csv`` call.

    One pandas call per member costs ~1 ms × 4,000 per set; instead each member's rows get the
    stay's index as a leading column and the ``hh:mm`` time is split at the colon (values never
    contain one), so the whole set becomes one CSV text. Returns the member names and the rows
    ``(stay, hh, mm, param, value)``.
    """
    members: list[str] = []
    chunks: list[bytes] = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                head, _, body = raw.partition(b"\n")
                if head.strip() != b"Time,Parameter,Value":
                    raise HighmodalError(f"{path}: member {member.name} does not start with the header "
                                         f"'Time,Parameter,Value' (found {head[:40]!r})")
                prefix = f"{first_stay + len(members)},".encode()
                members.append(member.name)
                body = body.strip().replace(b"\r", b"").replace(b":", b",")
                if body:
                    chunks.append(prefix + body.replace(b"\n", b"\n" + prefix) + b"\n")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise HighmodalError(f"{path}: cannot read the tar.gz archive ({e})") from None
    if not members:
        raise HighmodalError(f"{path}: the archive holds no stay files")
    try:
        rows = pd.read_csv(io.BytesIO(b"".join(chunks)), header=None, names=["stay", "hh", "mm", "param", "value"],
                           dtype={"stay": np.int64, "hh": np.int64, "mm": np.int64, "param": str,
                                  "value": np.float64})
    except (ValueError, pd.errors.ParserError) as e:
        raise HighmodalError(f"{path}: a stay file has a row that is not 'hh:mm,Parameter,number' ({e})") from None
    unknown = set(rows["param"].unique()) - set(DESCRIPTORS) - set(SERIES_VARIABLES)
    if unknown:
        raise HighmodalError(f"{path}: unknown parameter(s) {sorted(unknown)}; expected the challenge's "
                             f"descriptors {DESCRIPTORS} and time series {SERIES_VARIABLES}")
    return members, rows


def _static_descriptors(rows: pd.DataFrame, members: list[str], paths: list[Path]) -> np.ndarray:
    """``(N, 5)`` Age, Gender, Height, ICUType, Weight per stay (NaN where the file says -1).

    189 of the 8,000 files sort their 00:00 rows by name, mixing descriptors with measurements, so
    descriptors are found by name, not by position. The descriptor weight is the first 00:00
    ``Weight`` row (the admission weight)."""
    n = len(members)
    desc = rows[rows["param"].isin(DESCRIPTORS)]
    counts = desc.groupby(["stay", "param"]).size().unstack(fill_value=0).reindex(index=range(n), fill_value=0)
    counts = counts.reindex(columns=list(DESCRIPTORS), fill_value=0)
    bad = np.flatnonzero((counts.to_numpy() != 1).any(axis=1))
    if len(bad):
        where = paths[0] if members[bad[0]].startswith("set-a") else paths[1]
        raise HighmodalError(f"{where}: member {members[bad[0]]} must hold each descriptor {DESCRIPTORS} once")
    table = desc.pivot(index="stay", columns="param", values="value").reindex(range(n))
    first = rows[(rows["param"] == "Weight") & (rows["hh"] == 0) & (rows["mm"] == 0)].groupby("stay")["value"].first()
    weight = first.reindex(range(n)).to_numpy()
    out = np.stack([table["Age"], table["Gender"], table["Height"], table["ICUType"], weight], axis=1)
    out[out == -1] = np.nan
    return out.astype(np.float32)


def _hourly_means(rows: pd.DataFrame, n: int) -> np.ndarray:
    """``(N, 48, V)`` mean of each variable per hour since admission, NaN where nothing was measured.

    Hourly bins over the first 48 h follow the MIMIC-III in-hospital-mortality benchmark's
    discretisation (Harutyunyan et al. 2019); readings at exactly 48:00 join the last bin. Negative values are
    dropped: no variable here can be negative, and -1 is the files' missing-value code (it also
    appears inside the Temp and Weight series)."""
    series = rows[rows["param"].isin(SERIES_VARIABLES) & (rows["value"] >= 0)]
    var = pd.Categorical(series["param"], categories=SERIES_VARIABLES).codes.astype(np.int64)
    hour = np.minimum((series["hh"].to_numpy() * 60 + series["mm"].to_numpy()) // 60, HOURS - 1)
    v = len(SERIES_VARIABLES)
    flat = (series["stay"].to_numpy() * HOURS + hour) * v + var
    size = n * HOURS * v
    sums = np.bincount(flat, weights=series["value"].to_numpy(), minlength=size)
    counts = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return means.reshape(n, HOURS, v).astype(np.float32)


def _outcomes(path: Path, record_ids: np.ndarray) -> np.ndarray:
    """In-hospital death (0/1) for each record id, in the order given."""
    try:
        table = pd.read_csv(path)
        deaths = table.set_index("RecordID")["In-hospital_death"]
    except (ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise HighmodalError(f"{path}: cannot read the RecordID and In-hospital_death columns ({e})") from None
    if not deaths.index.is_unique:
        raise HighmodalError(f"{path}: a RecordID appears more than once")
    missing = np.setdiff1d(record_ids, deaths.index.to_numpy())
    if len(missing):
        raise HighmodalError(f"{path}: no outcome for RecordID {int(missing[0])} ({len(missing)} stays lack one)")
    y = deaths.reindex(record_ids).to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise HighmodalError(f"{path}: In-hospital_death must be 0 or 1")
    return y.astype(np.int64)


def _clip_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column 0.5/99.5 percentiles of the observed (non-NaN) training values ``(M, C)``."""
    lo, hi = np.nanpercentile(x, CLIP_PERCENTILES, axis=0)
    return lo, hi


def _series_channels(hourly: np.ndarray, lo: np.ndarray, hi: np.ndarray, mean: np.ndarray,
                     std: np.ndarray) -> np.ndarray:
    """Standardised value (0 where unobserved) ⊕ observed indicator: ``(N, 48, V)`` → ``(N, 48, 2V)``."""
    observed = ~np.isnan(hourly)
    z = (np.clip(hourly, lo, hi) - mean) / std
    return np.concatenate([np.where(observed, z, 0.0), observed], axis=-1).astype(np.float32)


def _static_columns(raw: np.ndarray, lo: np.ndarray, hi: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Descriptors → the ``STATIC_COLUMNS`` table ``(N, 11, 1)``: numbers with missing indicators
    (gaps filled with the training mean, so they normalise to 0; height and weight clipped to the
    training percentiles), ICU type one-hot (a category code has no order)."""
    age, gender, height, icu, weight = raw.T
    height, weight = np.clip(height, lo[2], hi[2]), np.clip(weight, lo[4], hi[4])  # e.g. a 462 cm height
    cols = [age]
    for j, values in ((1, gender), (2, height), (4, weight)):
        missing = np.isnan(values)
        cols += [np.where(missing, fill[j], values), missing]
    cols += [icu == k for k in range(1, len(ICU_TYPES) + 1)]
    return np.stack(cols, axis=1).astype(np.float32)[..., None]


@register_loader(
    "physionet2012", PhysioNetOptions, ("time_series", "tabular"),
    "PhysioNet/CinC 2012 ICU stays: 48 h vitals/labs + admission descriptors → in-hospital death (set-b = test)",
    shared_available("physionet2012", PHYSIONET_FILES),
)
def physionet2012(opts: PhysioNetOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """In-hospital mortality from the first 48 h of an ICU stay (the challenge's Event 1 outcome).

    set-b is the test split, set-a gives train and a stratified validation split (``val_frac``);
    AUROC is primary (deaths ~14 %). ``icu_series`` ``(48, 2V)``: hourly means, clipped and z-scored
    on train, 0 where unobserved, plus one observed-indicator channel per variable; ``icu_static``
    ``(11, 1)``: one token per column. Design: docs/data.md#clinical-physionet-2012.
    """
    folder = require_root(ctx, "physionet2012")
    sums = verified_files(ctx, "physionet2012", PHYSIONET_FILES)
    archives = [folder / "set-a.tar.gz", folder / "set-b.tar.gz"]

    def build() -> dict[str, np.ndarray]:
        members_a, rows_a = _read_archive(archives[0], 0)
        members_b, rows_b = _read_archive(archives[1], len(members_a))
        members = members_a + members_b
        rows = pd.concat([rows_a, rows_b], ignore_index=True)
        static = _static_descriptors(rows, members, archives)
        ids = rows[rows["param"] == "RecordID"].set_index("stay")["value"]
        record_ids = ids.reindex(range(len(members))).to_numpy().astype(np.int64)
        in_b = np.arange(len(members)) >= len(members_a)
        y = np.empty(len(members), np.int64)
        y[~in_b] = _outcomes(folder / "Outcomes-a.txt", record_ids[~in_b])
        y[in_b] = _outcomes(folder / "Outcomes-b.txt", record_ids[in_b])
        return {"hourly": _hourly_means(rows, len(members)), "static": static, "y": y, "set_b": in_b,
                "record_id": record_ids}

    arrays = cached_arrays("physionet2012", sums, {"hours": HOURS, "variables": SERIES_VARIABLES}, build)
    raw = SplitData({"icu_series": arrays["hourly"], "icu_static": arrays["static"]}, arrays["y"])
    in_b = arrays["set_b"]
    train, val = carve(raw.subset(np.flatnonzero(~in_b)), opts.val_frac, ctx.seed, stratify=True)
    test = raw.subset(np.flatnonzero(in_b))

    v = len(SERIES_VARIABLES)
    train_hours = train.inputs["icu_series"].reshape(-1, v)
    s_lo, s_hi = _clip_bounds(train_hours)
    clipped = np.clip(train_hours, s_lo, s_hi)
    s_mean = np.nanmean(clipped, axis=0)
    s_std = np.nanstd(clipped, axis=0)
    s_std = np.where(s_std > 1e-8, s_std, 1.0)  # MechVent is only ever recorded as 1
    t_lo, t_hi = _clip_bounds(train.inputs["icu_static"])
    t_fill = np.nanmean(np.clip(train.inputs["icu_static"], t_lo, t_hi), axis=0)

    def encode(split: SplitData) -> SplitData:
        return SplitData({"icu_series": _series_channels(split.inputs["icu_series"], s_lo, s_hi, s_mean, s_std),
                          "icu_static": _static_columns(split.inputs["icu_static"], t_lo, t_hi, t_fill)}, split.y)

    splits = {"train": encode(train), "val": encode(val), "test": encode(test)}
    task = make_task(entry, ["icu_series", "icu_static"], "classification", 2, ["survived", "died"],
                     "in-hospital death from 48 h of ICU vitals/labs and admission descriptors")
    td = TaskData(replace(task, metric=entry.metric or "auroc"),
                  {"icu_series": spec("icu_series", "time_series", (HOURS, 2 * v)),
                   "icu_static": spec("icu_static", "tabular", (len(STATIC_COLUMNS), 1))},
                  splits, str(folder))
    return fit_normalization(td, {"icu_series": "none", "icu_static": "element"})
