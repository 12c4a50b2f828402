"""Bring your own data as users have it, through the real CLI: a UEA .ts folder (`source: ts`), a TU
graph folder (`source: tu`) and a manifest CSV of point-cloud and image files with string labels
(`source: manifest`); each trains, evaluates and predicts from files in the same format. Also the
label checks and the papercuts (default name, broken pipe, config reference)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

TRAIN = {"epochs": 3, "batch_size": 16, "lr": 0.002}
MODEL = {"name": "highmmt", "preset": "tiny"}


def predictions(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def train_evaluate_predict(cli, root: Path, task: dict, new_input: Path, rows: int, epochs: int = 3
                           ) -> tuple[dict, list[dict]]:
    train = TRAIN | {"epochs": epochs}
    (root / "exp.yaml").write_text(yaml.safe_dump({"seed": 0, "tasks": [task], "model": MODEL, "train": train}))
    cli("train", "--config", "exp.yaml", "--out", "run", "--no-progress", cwd=root, check=True)
    report = json.loads((root / "run" / "eval_test.json").read_text())["tasks"][task["name"]]
    cli("predict", "run", "--task", task["name"], "--input", str(new_input), "--out", "preds.csv", cwd=root,
        check=True)
    preds = predictions(root / "preds.csv")
    assert len(preds) == rows
    return report, preds


def test_ts_folder_trains_evaluates_and_predicts_the_test_file(tmp_path, cli):
    """BasicMotions as shipped (NAME_TRAIN.ts / NAME_TEST.ts), cut into two IMU modalities."""
    import sktime

    shutil.copytree(Path(sktime.__file__).parent / "datasets" / "data" / "BasicMotions", tmp_path / "BasicMotions")
    task = {"name": "motions", "source": "ts", "path": "BasicMotions",
            "modalities": {"acc": {"kind": "imu", "dims": [0, 1, 2]}, "gyro": {"kind": "imu", "dims": [3, 4, 5]}}}
    test_file = tmp_path / "BasicMotions" / "BasicMotions_TEST.ts"
    report, preds = train_evaluate_predict(cli, tmp_path, task, test_file, 40)
    assert report["n"] == 40 and report["modalities"] == ["acc:imu", "gyro:imu"]
    labels = [line.rsplit(":", 1)[1].strip() for line in test_file.read_text().splitlines()
              if line and not line.startswith(("@", "#"))]
    accuracy = np.mean([p["prediction"] == t.lower() for p, t in zip(preds, labels, strict=True)])
    assert accuracy == pytest.approx(report["metrics"]["accuracy"]), "predict disagrees with evaluate"


def test_ts_unequal_lengths_get_a_mask(tmp_path):
    import sktime

    from highmodal.data import LoadContext, build_suite

    folder = Path(sktime.__file__).parent / "datasets" / "data" / "JapaneseVowels"
    td = build_suite([{"name": "vowels", "source": "ts", "path": str(folder)}], LoadContext(seed=0))["vowels"]
    spec = td.specs["vowels_series"]
    assert spec.shape == (None, 12) and spec.max_len == 29 and len(td.splits["test"]) == 370
    lengths = td.splits["train"].masks["vowels_series"].sum(1)
    assert lengths.min() < lengths.max() <= 29


def write_tu(folder: Path, images: np.ndarray, labels: np.ndarray | None, name: str = "DIGITS") -> None:
    """Digit images as TU graphs: ink pixels are nodes (label: intensity bin, attribute: intensity),
    4-neighbour edges."""
    folder.mkdir(parents=True)
    edges, indicator, node_labels, attrs, offset = [], [], [], [], 0
    for g, img in enumerate(images):
        ys, xs = np.nonzero(img > 4)
        index = {(y, x): offset + i + 1 for i, (y, x) in enumerate(zip(ys, xs, strict=True))}
        for (y, x), i in index.items():
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if (y + dy, x + dx) in index:
                    edges.append((i, index[(y + dy, x + dx)]))
        indicator += [g + 1] * len(index)
        node_labels += [int(img[y, x] > 10) for y, x in index]
        attrs += [f"{img[y, x] / 16:.4f},{y / 8:.3f}" for y, x in index]
        offset += len(index)
    (folder / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (folder / f"{name}_graph_indicator.txt").write_text("".join(f"{g}\n" for g in indicator))
    (folder / f"{name}_node_labels.txt").write_text("".join(f"{v}\n" for v in node_labels))
    (folder / f"{name}_node_attributes.txt").write_text("".join(f"{v}\n" for v in attrs))
    if labels is not None:
        (folder / f"{name}_graph_labels.txt").write_text("".join(f"{v}\n" for v in labels))


def test_tu_folder_trains_evaluates_and_predicts_new_graphs(tmp_path, cli):
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(np.isin(digits.target, [0, 1, 7]))[:240]
    write_tu(tmp_path / "DIGITS", digits.images[keep], digits.target[keep])
    write_tu(tmp_path / "new" / "DIGITS", digits.images[keep[:12]], None)
    task = {"name": "shapes", "source": "tu", "path": "DIGITS", "max_nodes": 64}
    report, preds = train_evaluate_predict(cli, tmp_path, task, tmp_path / "new" / "DIGITS", 12)
    assert report["metrics"]["accuracy"] > 0.5, report  # chance (majority) is about 0.35
    assert {p["prediction"] for p in preds} <= {"0", "1", "7"}
    # The strongest simple baseline beside the model, on the same test rows.
    proc = cli("evaluate", "run", "--baseline", "--json", "against.json", cwd=tmp_path, check=True)
    row = json.loads((tmp_path / "against.json").read_text())["against_simple"]["shapes"]
    assert "wl_kernel_svm" in row["candidates"] and row["simple_best_model"] in proc.stdout
    assert row["model"] == pytest.approx(report["metrics"]["accuracy"]) and row["simple_best"] > 0.5
    low, high = row["model_vs_simple"]["ci"]
    assert low <= row["model_vs_simple"]["difference"] <= high
    assert row["model_vs_simple"]["verdict"] == ("above" if low > 0 else "below" if high < 0 else "tie")
    assert cli("evaluate", "run", "--baseline", "--split", "val", cwd=tmp_path).returncode != 0


def test_manifest_of_point_and_image_files_with_string_labels(tmp_path, cli):
    """A manifest CSV: one .xyz point cloud and one .png per sample, string labels; predict from a
    second manifest of raw files with no label column."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rng = np.random.default_rng(0)
    (tmp_path / "files").mkdir()
    rows = []
    for i in range(300):
        img = digits.images[i]
        ys, xs = np.nonzero(img > 4)
        pts = np.c_[xs + rng.normal(0, 0.2, len(xs)), -ys + rng.normal(0, 0.2, len(xs)), img[ys, xs] / 16]
        np.savetxt(tmp_path / "files" / f"{i}.xyz", pts, fmt="%.4f")
        Image.fromarray((np.kron(img, np.ones((2, 2))) * 15).astype(np.uint8)).save(tmp_path / "files" / f"{i}.png")
        rows.append({"cloud": f"files/{i}.xyz", "picture": f"files/{i}.png", "label": names[digits.target[i]]})
    with open(tmp_path / "objects.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["cloud", "picture", "label"])
        writer.writeheader()
        writer.writerows(rows)
    with open(tmp_path / "new.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["cloud", "picture"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("cloud", "picture")} for r in rows[:20])
    task = {"name": "objects", "source": "manifest", "path": "objects.csv",
            "modalities": {"points": {"kind": "point_cloud", "key": "cloud", "points": 48},
                           "pixels": {"kind": "image", "key": "picture", "patch": 4}},
            "target": {"kind": "classification", "key": "label"}}
    report, preds = train_evaluate_predict(cli, tmp_path, task, tmp_path / "new.csv", 20, epochs=15)
    assert report["metrics"]["accuracy"] > 0.3, report  # 10 classes
    assert {p["prediction"] for p in preds} <= set(names)
    assert set(preds[0]) == {"index", "prediction", *[f"prob_{c}" for c in sorted(names)]}


def test_point_clouds_are_sampled_centred_and_scaled(tmp_path):
    from highmodal.data.manifest import ManifestField, farthest_points, read_points

    pts = np.random.default_rng(0).normal(size=(5000, 3)) * 7 + 100
    np.savetxt(tmp_path / "a.xyz", pts)
    np.save(tmp_path / "a.npy", pts)
    (tmp_path / "a.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 2 0\n3 0 1 2\n")
    ply = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "a.ply").write_text(ply + "1 2 3\n4 5 6\n")
    f = ManifestField("point_cloud", "file", points=256)
    out = read_points(tmp_path / "a.xyz", f, np.random.default_rng(0))
    assert out.shape == (256, 3) and np.allclose(out.mean(0), 0, atol=1e-5)
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    assert read_points(tmp_path / "a.npy", f, np.random.default_rng(0)).shape == (256, 3)
    assert read_points(tmp_path / "a.off", f, np.random.default_rng(0)).shape == (3, 3)
    assert read_points(tmp_path / "a.ply", f, np.random.default_rng(0)).shape == (2, 3)
    # Farthest-point sampling spreads out: its points are farther apart than a random draw's.
    chosen = pts[farthest_points(pts, 64, np.random.default_rng(0))]
    drawn = pts[np.random.default_rng(0).choice(len(pts), 64, replace=False)]

    def nearest(p: np.ndarray) -> float:
        d = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(len(p)) * 1e9
        return float(d.min(1).mean())

    assert nearest(chosen) > 1.5 * nearest(drawn)


@pytest.mark.parametrize(("labels", "split", "num_classes", "message"), [
    ([0] * 30 + [1] * 10, ["train"] * 30 + ["test"] * 10, None, "one class in its training split"),
    ([0, 1] * 15 + [2] * 10, ["train"] * 30 + ["test"] * 10, None, "class(es) '2' with no training rows"),
    ([0, 1, 2, 3] * 10, None, 3, "label 3 is out of range 0..2"),
    ([0, 1, 2] * 13 + [0], None, 4, "class(es) 3 have no rows"),
    (["a", "b"] * 20, None, 3, "num_classes = 3 but the labels hold 2 distinct values"),
])
def test_bad_labels_are_clear_errors(tmp_path, labels, split, num_classes, message):
    from highmodal.data import LoadContext, build_suite
    from highmodal.errors import HighmodalError

    with pytest.raises(HighmodalError, match=r"d\.npz") as e:
        build_suite([bad_label_task(tmp_path, labels, split, num_classes)], LoadContext(seed=0))
    assert message in str(e.value)


@pytest.mark.parametrize(("options", "message"), [
    ({"val_frac": 0}, "val_frac: 0.0 must lie strictly between 0 and 1"),
    ({"test_frac": 1.0}, "test_frac: 1.0 must lie strictly between 0 and 1"),
])
def test_a_split_fraction_that_leaves_a_split_empty_is_refused(tmp_path, options, message):
    from highmodal.data import LoadContext, build_suite
    from highmodal.errors import HighmodalError

    task = bad_label_task(tmp_path, [0, 1] * 20, None, None) | options
    with pytest.raises(HighmodalError, match=r"d\.npz") as e:
        build_suite([task], LoadContext(seed=0))
    assert message in str(e.value)


def bad_label_task(root: Path, labels, split, num_classes) -> dict:
    arrays = {"x": np.random.default_rng(0).normal(size=(len(labels), 5)).astype(np.float32), "y": np.array(labels)}
    if split:
        arrays["split"] = np.array(split)
    np.savez(root / "d.npz", **arrays)
    target = {"kind": "classification", "key": "y"} | ({"num_classes": num_classes} if num_classes else {})
    return {"name": "t", "source": "npz", "path": str(root / "d.npz"),
            "modalities": {"x": {"kind": "tabular", "key": "x"}}, "target": target}


def test_a_bad_label_stops_the_cli_before_anything_is_written(tmp_path, cli):
    task = bad_label_task(tmp_path, [0] * 30 + [1] * 10, ["train"] * 30 + ["test"] * 10, None)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"tasks": [task], "model": MODEL, "train": TRAIN}))
    proc = cli("train", "--config", "exp.yaml", "--out", "run", cwd=tmp_path)
    assert proc.returncode != 0 and "one class in its training split" in proc.stderr and "d.npz" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_papercuts_default_name_quiet_pipe_and_reference(tmp_path, cli):
    task = {"name": "digits", "source": "sklearn_digits"}
    (tmp_path / "my_digits.yaml").write_text(yaml.safe_dump({"tasks": [task], "model": MODEL,
                                                             "train": {"epochs": 1}}))
    proc = cli("train", "--config", "my_digits.yaml", "--out", "run", cwd=tmp_path, check=True)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["name"] == "my_digits"
    assert "it/s" not in proc.stderr  # no progress bar in a redirected log
    # `highmodal evaluate run | head`: the reader is gone before the table is written.
    proc = subprocess.Popen([sys.executable, "-m", "highmodal.cli", "evaluate", "run"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
    reference = cli("config", "--reference", check=True).stdout
    for line in ("# tasks[i] with source: ts", "dims: list[int] | None = None", "# tasks[i] with source: manifest",
                 "sampling: str = 'fps'", "split_key: str = 'split'", "val_frac: float = 0.15"):
        assert line in reference, line


def test_manifest_text_is_hashed_the_same_at_predict_time(tmp_path):
    """Raw text in a manifest column: sentences of three scikit-learn dataset descriptions, labelled
    by dataset; ids are stable hashes, so reading new rows with the trained spec gives the same ids."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer, load_iris, load_wine

    from highmodal.data import LoadContext, build_suite
    from highmodal.data.manifest import ManifestField, manifest_inputs
    from highmodal.experiments.baselines import BASELINES

    rows = [{"text": line.strip(), "source": name} for name, load in
            (("wine", load_wine), ("iris", load_iris), ("cancer", load_breast_cancer))
            for line in load().DESCR.splitlines() if len(line.split()) >= 4]
    pd.DataFrame(rows).to_csv(tmp_path / "lines.csv", index=False)
    task = {"name": "which", "source": "manifest", "path": str(tmp_path / "lines.csv"),
            "modalities": {"words": {"kind": "text", "key": "text", "max_words": 24}},
            "target": {"kind": "classification", "key": "source"}}
    td = build_suite([task], LoadContext(seed=0))["which"]
    spec = td.specs["words"]
    assert spec.vocab_size == 32768 and spec.max_len == 24 and spec.mean is None
    train = td.splits["train"]
    ids, mask = train.inputs["words"][..., 0], train.masks["words"]
    assert np.all((ids >= 1) == mask) and ids.max() < 32768 and np.all(ids == np.round(ids))
    assert BASELINES.get("tfidf_logreg").applies(td)
    again = manifest_inputs(pd.DataFrame({"text": [train.meta["text"][0]]}), {"words": ManifestField(
        "text", "text", max_words=24)}, tmp_path, "new", 0, {"words": spec})["words"]
    np.testing.assert_array_equal(again[0][0], train.inputs["words"][0])


def test_class_folders_of_images_and_predicting_a_folder(tmp_path):
    """ImageFolder layout: digits as PNG files in one folder per class; predict reads a plain folder."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from highmodal.data import LoadContext, build_suite
    from highmodal.data.inputs import read_inputs

    digits = load_digits()
    for i in range(120):
        folder = tmp_path / "digits" / f"class_{digits.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "new").mkdir()
    for i in range(120, 125):
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(tmp_path / "new" / f"{i}.png")
    entry = {"name": "digits", "source": "folder", "path": str(tmp_path / "digits"),
             "field": {"kind": "image", "patch": 2}, "modality": "pixels"}
    td = build_suite([entry], LoadContext(seed=0))["digits"]
    assert td.task.class_names == tuple(f"class_{d}" for d in range(10)) and td.specs["pixels"].shape == (4, 4, 4)
    assert sum(len(s) for s in td.splits.values()) == 120
    inputs, masks = read_inputs(entry, tmp_path / "new", td.specs)
    assert inputs["pixels"].shape == (5, 4, 4, 4) and masks == {}
    expected = (digits.images[120] * 15).astype(np.uint8) / 255.0
    np.testing.assert_allclose(inputs["pixels"][0, 0, 0], expected[:2, :2].ravel(), atol=1e-6)


def digits_as_edge_lists(images: np.ndarray) -> dict[str, np.ndarray]:
    """The graphs of ``write_tu`` in PyTorch Geometric's layout: ``edge_index`` (2, E), ``batch``,
    integer node labels ``z`` and node values ``pos``."""
    edges, batch, z, pos, offset = [], [], [], [], 0
    for g, img in enumerate(images):
        ys, xs = np.nonzero(img > 4)
        index = {(y, x): offset + i for i, (y, x) in enumerate(zip(ys, xs, strict=True))}
        for (y, x), i in index.items():
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if (y + dy, x + dx) in index:
                    edges.append((i, index[(y + dy, x + dx)]))
        batch += [g] * len(index)
        z += [int(img[y, x] > 10) for y, x in index]
        pos += [(img[y, x] / 16, y / 8) for y, x in index]
        offset += len(index)
    return {"edge_index": np.array(edges).T, "batch": np.array(batch), "z": np.array(z), "pos": np.array(pos)}


def test_npz_graphs_as_edge_lists_match_the_tu_reader(tmp_path):
    """The same graphs as a TU folder and as an npz edge list give the same node tokens."""
    from sklearn.datasets import load_digits

    from highmodal.data.byo import ModalityField, npz_graphs
    from highmodal.data.real.graphs import GraphOptions, build_tu_graphs

    digits = load_digits()
    write_tu(tmp_path / "DIGITS", digits.images[:30], digits.target[:30])
    tu = build_tu_graphs(tmp_path / "DIGITS", "DIGITS", GraphOptions(max_nodes=64), ("node_labels",))
    arrays = digits_as_edge_lists(digits.images[:30])
    field = ModalityField(kind="graph", key="z", edge_index="edge_index", graph_index="batch", max_nodes=64)
    ours = npz_graphs(arrays, field, "test")
    np.testing.assert_allclose(ours["x"], tu["x"])
    np.testing.assert_array_equal(ours["mask"], tu["mask"])
    np.testing.assert_array_equal(ours["wl"], tu["wl"])
    with pytest.raises(Exception, match="joins two graphs"):
        npz_graphs({**arrays, "edge_index": np.array([[0], [len(arrays["batch"]) - 1]])}, field, "test")
    with pytest.raises(Exception, match="non-decreasing"):
        npz_graphs({**arrays, "batch": arrays["batch"][::-1].copy()}, field, "test")


def test_npz_graphs_train_and_predict_through_the_cli(tmp_path, cli):
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(np.isin(digits.target, [0, 1, 7]))[:240]
    np.savez(tmp_path / "graphs.npz", y=digits.target[keep], **digits_as_edge_lists(digits.images[keep]))
    np.savez(tmp_path / "new.npz", **digits_as_edge_lists(digits.images[keep[:9]]))
    task = {"name": "shapes", "source": "npz", "path": "graphs.npz",
            "modalities": {"pixels": {"kind": "graph", "key": "pos", "edge_index": "edge_index",
                                      "graph_index": "batch", "max_nodes": 64}},
            "target": {"kind": "classification", "key": "y"}}
    report, preds = train_evaluate_predict(cli, tmp_path, task, tmp_path / "new.npz", 9)
    assert report["metrics"]["accuracy"] > 0.5, report  # chance (majority) is about 0.35
    assert {p["prediction"] for p in preds} <= {"0", "1", "7"}


def test_audio_files_wav_and_flac_in_class_folders(tmp_path):
    """Low and high tones as WAV and FLAC files in one folder per class: both read through soundfile
    into the same log-mel frames (FLAC is lossless), and the band holding the tone tells the classes apart."""
    import soundfile
    from scipy.io import wavfile

    from highmodal.data import LoadContext, build_suite

    rng = np.random.default_rng(0)
    rate = 8000
    t = np.arange(rate // 2) / rate
    for label, freq in (("low", 300.0), ("high", 2000.0)):
        (tmp_path / "tones" / label).mkdir(parents=True)
        for i in range(12):
            wave = (0.5 * np.sin(2 * np.pi * (freq + 20 * i) * t) + 0.05 * rng.normal(size=len(t))).astype(np.float32)
            pcm = (wave * 32767).astype(np.int16)
            if i % 2:
                soundfile.write(tmp_path / "tones" / label / f"{i}.flac", pcm, rate, subtype="PCM_16")
            else:
                wavfile.write(tmp_path / "tones" / label / f"{i}.wav", rate, pcm)
    entry = {"name": "tones", "source": "folder", "path": str(tmp_path / "tones"),
             "field": {"kind": "audio", "sample_rate": rate}}
    td = build_suite([entry], LoadContext(seed=0))["tones"]
    x = np.concatenate([td.splits[s].inputs["input"] for s in ("train", "val", "test")])
    y = np.concatenate([td.splits[s].y for s in ("train", "val", "test")])
    assert len(x) == 24 and x.shape[-1] == td.specs["input"].channels
    high = td.task.class_names.index("high")
    peak_band = x.mean(1).argmax(1)  # the mel band holding the tone
    assert peak_band[y == high].min() > peak_band[y != high].max()
    from highmodal.data.manifest import ManifestField, read_audio

    wav = tmp_path / "same.wav"
    flac = tmp_path / "same.flac"
    pcm = (np.sin(2 * np.pi * 440 * t) * 20000).astype(np.int16)
    wavfile.write(wav, rate, pcm)
    soundfile.write(flac, pcm, rate, subtype="PCM_16")
    field = ManifestField(kind="audio", key="file", sample_rate=rate)
    np.testing.assert_allclose(read_audio(wav, field), read_audio(flac, field), atol=1e-6)
