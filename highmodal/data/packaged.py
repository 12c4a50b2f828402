"""Real datasets that ship inside PyPI packages (scikit-learn, sktime): usable with no download.

These make up the embedded ``demo`` suite. Official train/test splits are kept where the source
has them (the UEA/UCR archives); validation is always carved from train with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from highmodal.data.loaders import (
    LoadContext,
    TaskEntry,
    encode_labels,
    fit_normalization,
    make_task,
    package_available,
    pad_sequences,
    register_loader,
    spec,
)
from highmodal.data.splits import three_way
from highmodal.tasks import SplitData, TaskData


@dataclass
class SplitOptions:
    """``val_frac`` of train becomes validation; ``test_frac`` is used only without an official test split."""

    val_frac: float = 0.15
    test_frac: float = 0.2


def _sktime(name: str, split: str):
    from sktime import datasets

    return getattr(datasets, f"load_{name}")(split=split, return_type="numpy3D")


@register_loader("sklearn_digits", SplitOptions, ("image",),
                 "scikit-learn 8×8 handwritten digits (1,797 images, 10 classes)", package_available("sklearn"))
def sklearn_digits(opts: SplitOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Each pixel is a token with one channel on a 2-D position grid. No official split exists:
    a stratified test split is carved with the run seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[..., None]
    splits = three_way(SplitData({"digit_pixels": x}, d.target.astype(np.int64)), None,
                       opts.val_frac, opts.test_frac, ctx.seed, stratify=True)
    td = TaskData(
        make_task(entry, ["digit_pixels"], "classification", 10, [str(i) for i in range(10)],
                  "digit 0-9 from an 8x8 grey image"),
        {"digit_pixels": spec("digit_pixels", "image", (8, 8, 1))}, splits, "sklearn.datasets.load_digits",
    )
    return fit_normalization(td, {"digit_pixels": "channel"})


@register_loader("basic_motions", SplitOptions, ("imu", "imu"),
                 "UEA BasicMotions: smartwatch accelerometer + gyroscope (6×100), 4 activities",
                 package_available("sktime"))
def basic_motions(opts: SplitOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """A two-modality task from real fields: the archive's dimensions 0-2 are the accelerometer's
    x/y/z and 3-5 the gyroscope's, recorded together on one watch (Clements 2016, UEA archive).
    Each sensor becomes its own modality with 100 time steps × 3 channels. Official 40/40 split."""
    out = {}
    classes = None
    for split in ("train", "test"):
        x, labels = _sktime("basic_motions", split)
        x = x.transpose(0, 2, 1).astype(np.float32)
        y, classes = encode_labels(labels, f"basic_motions [{split}]", classes)
        out[split] = SplitData({"accelerometer": x[..., :3], "gyroscope": x[..., 3:]}, y)
    splits = three_way(out["train"], out["test"], opts.val_frac, opts.test_frac, ctx.seed, stratify=True)
    specs = {m: spec(m, "imu", (100, 3)) for m in ("accelerometer", "gyroscope")}
    td = TaskData(make_task(entry, ["accelerometer", "gyroscope"], "classification", len(classes), classes,
                            "activity (badminton/running/standing/walking) from watch IMU"),
                  specs, splits, "sktime.datasets.load_basic_motions")
    return fit_normalization(td, {"accelerometer": "channel", "gyroscope": "channel"})


@register_loader("japanese_vowels", SplitOptions, ("audio",),
                 "UEA JapaneseVowels: 12 LPC cepstra per frame, 7-29 frames, 9 speakers", package_available("sktime"))
def japanese_vowels(opts: SplitOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Speaker identification from an utterance of /ae/. Utterances vary in length, so frames are
    zero-padded to the longest and carry a mask. Official 270/370 split."""
    from sktime.datasets import load_japanese_vowels

    raw = {}
    for split in ("train", "test"):
        frame, labels = load_japanese_vowels(split=split)
        seqs = [np.stack([frame.iloc[i, j].to_numpy() for j in range(frame.shape[1])], axis=-1)
                for i in range(len(frame))]
        raw[split] = (seqs, labels)
    length = max(len(s) for seqs, _ in raw.values() for s in seqs)
    out = {}
    classes = None
    for split, (seqs, labels) in raw.items():
        x, mask = pad_sequences(seqs, length)
        y, classes = encode_labels(labels, f"japanese_vowels [{split}]", classes)
        out[split] = SplitData({"lpc_cepstra": x}, y, {"lpc_cepstra": mask})
    splits = three_way(out["train"], out["test"], opts.val_frac, opts.test_frac, ctx.seed, stratify=True)
    td = TaskData(make_task(entry, ["lpc_cepstra"], "classification", len(classes), classes,
                            "speaker (1-9) from LPC cepstra of a vowel"),
                  {"lpc_cepstra": spec("lpc_cepstra", "audio", (None, 12), max_len=length)},
                  splits, "sktime.datasets.load_japanese_vowels")
    return fit_normalization(td, {"lpc_cepstra": "channel"})


@register_loader("italy_power_demand", SplitOptions, ("time_series",),
                 "UCR ItalyPowerDemand: 24 hourly loads, winter vs summer day", package_available("sktime"))
def italy_power_demand(opts: SplitOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Season (Oct-Mar vs Apr-Sep) from one day's 24 hourly loads. Official 67/1,029 split;
    series are z-normalised per series in the archive already, so no extra scaling."""
    out = {}
    classes = None
    for split in ("train", "test"):
        x, labels = _sktime("italy_power_demand", split)
        y, classes = encode_labels(labels, f"italy_power_demand [{split}]", classes)
        out[split] = SplitData({"power_demand": x.transpose(0, 2, 1).astype(np.float32)}, y)
    splits = three_way(out["train"], out["test"], opts.val_frac, opts.test_frac, ctx.seed, stratify=True)
    return TaskData(make_task(entry, ["power_demand"], "classification", len(classes), classes,
                              "season from a day of hourly electricity demand"),
                    {"power_demand": spec("power_demand", "time_series", (24, 1))}, splits,
                    "sktime.datasets.load_italy_power_demand")


def _sklearn_table(loader: str, name: str, modality: str, regression: bool, description: str):
    def load(opts: SplitOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
        from sklearn import datasets

        d = getattr(datasets, loader)()
        x = d.data.astype(np.float32)[..., None]
        if regression:
            y = d.target.astype(np.float32)[:, None]
            task = make_task(entry, [modality], "regression", 1, description=description)
        else:
            y = d.target.astype(np.int64)
            task = make_task(entry, [modality], "classification", len(d.target_names),
                             [str(c) for c in d.target_names], description)
        splits = three_way(SplitData({modality: x}, y), None, opts.val_frac, opts.test_frac, ctx.seed,
                           stratify=not regression)
        td = TaskData(task, {modality: spec(modality, "tabular", (x.shape[1], 1))}, splits,
                      f"sklearn.datasets.{loader}")
        return fit_normalization(td, {modality: "element"})

    load.__doc__ = (f"{description}. Each column is a token (HighMMT treats table cells as sequence "
                    "elements), standardised per column on train. No official split: stratified, seeded.")
    register_loader(name, SplitOptions, ("tabular",), description, package_available("sklearn"))(load)
    return load


breast_cancer = _sklearn_table("load_breast_cancer", "breast_cancer", "cell_nuclei", False,
                               "Wisconsin breast cancer: 30 nucleus features, malignant vs benign")
diabetes = _sklearn_table("load_diabetes", "diabetes", "clinical_baseline", True,
                          "Diabetes progression one year on, from 10 baseline variables (regression)")
