"""Real-data benchmark: ONE HighMMT multitask model vs one HighMMT model per task vs the strongest
simple baseline per task (``experiments/baselines.py``), plus any further multitask models the suite lists
(e.g. OmniVec2), all on the same splits, each test value with its 95% interval and the multitask
model compared with the baseline by a paired bootstrap; writes ``results.md`` and ``results.json``."""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import time
import typing
from pathlib import Path

import numpy as np
import torch

from highmodal import __version__
from highmodal.config import ExperimentConfig, ModelConfig, TrainConfig, from_mapping, read_yaml, to_mapping
from highmodal.errors import HighmodalError
from highmodal.experiments.baselines import join, strongest_simple
from highmodal.experiments.run import reuse_run, suite_for, train_experiment
from highmodal.experiments.stats import interval, paired, sample_std, wilson
from highmodal.fileio import refuse_to_replace
from highmodal.heterogeneity.config import HeterogeneityConfig
from highmodal.metrics import METRICS, metric_names, threshold_accuracy
from highmodal.report import table, write_report
from highmodal.tasks import TaskData, TaskSuite
from highmodal.training.checkpoint import load
from highmodal.training.evaluation import evaluate_suite

SUITES_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclasses.dataclass
class Reference:
    """A published number for the task, with where it comes from and why it may not compare."""

    value: float | None = None
    source: str = ""


@dataclasses.dataclass
class QuickConfig:
    """``--quick``: a few tasks, a few epochs, capped splits; for smoke tests, not for results."""

    tasks: list[str] = dataclasses.field(default_factory=list)
    epochs: int = 2
    max_train: int = 256
    max_eval: int = 256
    preset: str = "tiny"


@dataclasses.dataclass
class ExtraModel:
    """One more multitask model trained on every task, reported as its own column. ``train`` overrides
    the suite's training settings; ``task_options`` adds loader options per task (another view of the
    same data, e.g. subword text or point sets, on the same splits); ``quick_preset`` for ``--quick``."""

    label: str
    model: ModelConfig
    train: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    task_options: dict[str, dict[str, typing.Any]] = dataclasses.field(default_factory=dict)
    quick_preset: str = "tiny"


@dataclasses.dataclass
class VariantStudyConfig:
    """Suite key ``variants:``. ``model``: the label of the ``models:`` entry to vary; ``task_options``
    replace that entry's data views for the study (the unified tokenizer cannot read subword ids)."""

    model: str = "omnivec2"
    max_train: int = 256
    max_eval: int = 512
    seeds: int = 3
    epochs: int | None = None
    task_options: dict[str, dict[str, typing.Any]] | None = None


@dataclasses.dataclass
class CrossValidation:
    """Suite key ``cross_validation:``: tasks scored, as their field does, by stratified k-fold
    cross-validation over all their rows (TU graph sets: 10 folds); the per-task model (b) and the
    simple baseline (c) are trained on each fold, the multitask model (a) only on the suite's split."""

    tasks: list[str] = dataclasses.field(default_factory=list)
    folds: int = 10
    val_frac: float = 0.1


@dataclasses.dataclass
class SuiteConfig(ExperimentConfig):
    """An experiment plus what the report needs: published references and a pointer to the analysis."""

    references: dict[str, Reference] = dataclasses.field(default_factory=dict)
    quick: QuickConfig = dataclasses.field(default_factory=QuickConfig)
    notes: str = ""
    models: list[ExtraModel] = dataclasses.field(default_factory=list)
    variants: VariantStudyConfig = dataclasses.field(default_factory=VariantStudyConfig)
    heterogeneity: HeterogeneityConfig = dataclasses.field(default_factory=HeterogeneityConfig)
    cross_validation: CrossValidation = dataclasses.field(default_factory=CrossValidation)


def load_suite_config(name: str) -> tuple[SuiteConfig, Path]:
    """``name`` is a YAML path or a packaged suite (``highmodal/configs/<name>.yaml``); a file that
    exists is always read as given, with or without a suffix."""
    path = Path(name)
    if not path.is_file() and not path.suffix:
        path = SUITES_DIR / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
            raise HighmodalError(f"unknown suite {name!r}; known: {known} (or pass a YAML path)")
    return from_mapping(SuiteConfig, read_yaml(path), str(path)), path.parent


def fold_task(td: TaskData, folds: int, fold: int, val_frac: float, seed: int) -> TaskData:
    """Fold ``fold`` of a stratified k-fold split over all of the task's rows as the test split, a
    stratified ``val_frac`` of the rest as validation; normalisation statistics refit on the fold's
    training rows (per channel or per element, as the task's specs hold them)."""
    from sklearn.model_selection import StratifiedKFold

    from highmodal.data.loaders import fit_normalization
    from highmodal.data.splits import carve

    parts = [td.splits[s] for s in ("train", "val", "test")]
    rows = parts[0]
    for part in parts[1:]:
        rows = join(rows, part)
    rest, test = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(rows.y, rows.y))[fold]
    train, val = carve(rows.subset(rest), val_frac, seed + fold, stratify=True)
    modes = {m: "none" if sp.mean is None else "channel" if len(sp.mean) == sp.channels else "element"
             for m, sp in td.specs.items()}
    return fit_normalization(dataclasses.replace(td, splits={"train": train, "val": val, "test": rows.subset(test)}),
                             modes)


def cap_task(td: TaskData, max_train: int, max_eval: int, seed: int) -> TaskData:
    rng = np.random.default_rng(seed)
    splits = {}
    for name, data in td.splits.items():
        cap = max_train if name == "train" else max_eval
        idx = np.sort(rng.permutation(len(data))[:cap]) if len(data) > cap else np.arange(len(data))
        splits[name] = data.subset(idx)
    return dataclasses.replace(td, splits=splits)


def cap_suite(suite: TaskSuite, max_train: int, max_eval: int, seed: int) -> TaskSuite:
    return TaskSuite([cap_task(td, max_train, max_eval, seed) for td in suite])


def _experiment(cfg: SuiteConfig, name: str, tasks: list[dict]) -> ExperimentConfig:
    fields = {f.name: copy.deepcopy(getattr(cfg, f.name)) for f in dataclasses.fields(ExperimentConfig)}
    return ExperimentConfig(**(fields | {"name": name, "tasks": tasks}))


def apply_quick(cfg: SuiteConfig) -> None:
    """``--quick`` on a suite config, in place, for every study: the quick tasks (default: the first
    three), epochs and preset. Each study then caps its splits at ``cfg.quick.max_train/max_eval``."""
    keep = set(cfg.quick.tasks) or {t["name"] for t in cfg.tasks[:3]}
    cfg.tasks = [t for t in cfg.tasks if t.get("name") in keep]
    cfg.train.epochs = cfg.quick.epochs
    cfg.model.preset = cfg.quick.preset


def extra_experiment(cfg: SuiteConfig, extra: ExtraModel, quick: bool, names: set[str]) -> ExperimentConfig:
    """``names``: every task of the suite (quick mode trains a subset)."""
    for name in extra.task_options:
        if name not in names:
            raise HighmodalError(f"models[{extra.label}].task_options: unknown task {name!r}; "
                                 f"tasks: {', '.join(sorted(names))}")
    tasks = [t | extra.task_options.get(t["name"], {}) for t in cfg.tasks]
    train = from_mapping(TrainConfig, to_mapping(cfg.train) | extra.train, f"models[{extra.label}].train")
    model = dataclasses.replace(extra.model, preset=extra.quick_preset if quick else extra.model.preset)
    return ExperimentConfig(name=extra.label, tasks=tasks, seed=cfg.seed, model=model, train=train)


def run_suite(
    suite_name: str, out: Path, report_dir: Path | None, data_root: Path | None, quick: bool = False,
    overwrite: bool = False, progress: bool = True, command: str = "", log=print, reuse: Path | None = None,
) -> dict:
    """``reuse``: a folder of earlier suite runs; runs finished there with the same settings (HighMMT
    (a) and (b), the extra models, cross-validation folds) are evaluated instead of trained again
    (the report lists them). From another folder than ``out``, a run of other settings is trained
    again into ``out``; in ``out`` itself it is an error (it would have to be replaced)."""
    cfg, config_dir = load_suite_config(suite_name)
    names = {t.get("name") for t in cfg.tasks}
    if quick:
        apply_quick(cfg)
    if reuse != out:
        refuse_to_replace(out, overwrite)
    extras = {e.label: extra_experiment(cfg, e, quick, names) for e in cfg.models}  # bad settings fail before training
    t0 = time.perf_counter()
    suite = suite_for(cfg, config_dir, data_root)
    log(f"loaded {len(suite)} tasks in {time.perf_counter() - t0:.1f} s")
    if quick:
        suite = cap_suite(suite, cfg.quick.max_train, cfg.quick.max_eval, cfg.seed)
    entries = {t["name"]: t for t in cfg.tasks}

    reused: list[str] = []

    def test_of(run: Path, part: TaskSuite, exp: ExperimentConfig) -> dict:
        """The saved model's test results with each row's predictions (for intervals and paired tests);
        AUROC tasks also get the validation scores (``val_probs``, ``val_y``) a threshold is chosen on."""
        model = load(run, exp.train.device)
        res = evaluate_suite(model, part, "test", exp.train.eval_batch_size, exp.train.device, predictions=True)
        scored = [td for td in part if metric_names(td.task)[0] == "auroc"]
        if scored:
            for name, r in evaluate_suite(model, TaskSuite(scored), "val", exp.train.eval_batch_size,
                                          exp.train.device, predictions=True).items():
                res[name] |= {"val_probs": r["probs"], "val_y": r["y"]}
        return res

    def trained(exp: ExperimentConfig, rel: Path, part: TaskSuite) -> tuple[dict, dict]:
        """Test results (with predictions) and summary of ``exp``: reused from ``reuse / rel`` when a
        finished run of the same settings is there, else trained into ``out / rel``."""
        found = reuse_run(exp, reuse / rel, part, log, strict=reuse == out) if reuse is not None else None
        if found is not None:
            reused.append(str(reuse / rel))
            return test_of(reuse / rel, part, exp), found[1]
        run, _, summ = train_experiment(exp, out / rel, config_dir, data_root, overwrite, progress, log, suite=part)
        return test_of(run, part, exp), summ

    log("(a) one HighMMT model for all tasks")
    multi, multi_summary = trained(_experiment(cfg, "multitask", cfg.tasks), Path("multitask"), suite)
    single, single_summary, simple = {}, {}, {}
    for td in suite:
        name = td.task.name
        log(f"(b) HighMMT on {name} alone")
        res, summ = trained(_experiment(cfg, name, [entries[name]]), Path("single") / name, TaskSuite([td]))
        single[name], single_summary[name] = res[name], summ
        log(f"(c) strongest simple baseline on {name}")
        simple[name] = strongest_simple(td, log=log)
    extra_results, extra_summary = {}, {}
    for label, exp in extras.items():
        log(f"({label}) one {exp.model.name} ({exp.model.preset}) model for all tasks")
        extra_suite = suite_for(exp, config_dir, data_root)
        if quick:
            extra_suite = cap_suite(extra_suite, cfg.quick.max_train, cfg.quick.max_eval, cfg.seed)
        extra_results[label], extra_summary[label] = trained(exp, Path(label), extra_suite)

    cross = {}
    for td in suite:
        if td.task.name not in cfg.cross_validation.tasks:
            continue
        name, k = td.task.name, cfg.cross_validation.folds
        scores: dict[str, list[float]] = {"highmmt_single": [], "simple_best": []}
        for fold in range(k):
            log(f"(b), (c) on {name}: fold {fold + 1} of {k}")
            part = fold_task(td, k, fold, cfg.cross_validation.val_frac, cfg.seed)
            res, _ = trained(_experiment(cfg, name, [entries[name]]), Path("cv") / name / f"fold{fold}",
                             TaskSuite([part]))
            primary = metric_names(td.task)[0]
            scores["highmmt_single"].append(res[name]["metrics"][primary])
            scores["simple_best"].append(strongest_simple(part)["metrics"][primary])
        cross[name] = {"folds": k, **{m: {"mean": float(np.mean(v)), "std": sample_std(v), "values": v}
                                      for m, v in scores.items()}}

    rows = []
    for td in suite:
        t = td.task
        primary = metric_names(t)[0]
        ref = cfg.references.get(t.name, Reference())
        y = td.splits["test"].y
        outputs = {"highmmt_multitask": multi[t.name], "highmmt_single": single[t.name],
                   "simple_best": simple[t.name]} | {label: res[t.name] for label, res in extra_results.items()}
        rows.append({
            "task": t.name,
            "dataset": entries[t.name]["source"],
            "modalities": [td.specs[m].kind for m in t.modalities],
            "metric": primary,
            "higher_is_better": METRICS.get(primary)[1],
            "chance": multi[t.name]["chance"][primary],
            "models": {m: o["metrics"][primary] for m, o in outputs.items()}
            | {"classical": simple[t.name]["candidates"]["hgb"]["test"]},
            "skill": {m: o["skill"] for m, o in outputs.items()},
            "ci": {m: list(interval(t, o["y"], o["pred"], o["probs"], cfg.seed)) for m, o in outputs.items()},
            "simple_best_model": simple[t.name]["model"],
            "simple_candidates": simple[t.name]["candidates"],
            "multitask_vs_simple": paired(t, y, (multi[t.name]["pred"], multi[t.name]["probs"]),
                                          (simple[t.name]["pred"], simple[t.name]["probs"]), cfg.seed),
            "params": {"highmmt_multitask": multi_summary["params"],
                       "highmmt_single": single_summary[t.name]["params"]},
            "train_seconds": {"highmmt_single": single_summary[t.name]["train_seconds"],
                              "simple_best": simple[t.name]["seconds"]},
            "reference": {"value": ref.value, "source": ref.source},
        } | ({"cross_validation": cross[t.name]} if t.name in cross else {})
          | ({"threshold_accuracy": {m: at_val_threshold(o, y) for m, o in outputs.items()}}
             if primary == "auroc" else {}))
    models = ("highmmt_multitask", "highmmt_single", "simple_best", *extra_results)
    verdicts = [r["multitask_vs_simple"]["verdict"] for r in rows]
    summary = {
        "mean_skill": {m: float(np.mean([r["skill"][m] for r in rows])) for m in models},
        "total_params": {"highmmt_multitask": multi_summary["params"],
                         "highmmt_single": int(sum(s["params"] for s in single_summary.values()))}
        | {label: s["params"] for label, s in extra_summary.items()},
        "train_seconds": {"highmmt_multitask": multi_summary["train_seconds"],
                          "highmmt_single": float(sum(s["train_seconds"] for s in single_summary.values())),
                          "simple_best": float(sum(c["seconds"] for c in simple.values()))}
        | {label: s["train_seconds"] for label, s in extra_summary.items()},
        "significance": {v: verdicts.count(v) for v in ("above", "below", "tie")},
        "best_column": {r["task"]: max(models, key=lambda m, r=r: r["skill"][m]) for r in rows},
        "tasks": len(rows),
    }
    report = {
        "command": command, "suite": suite_name, "quick": quick, "seed": cfg.seed,
        "epochs": cfg.train.epochs, "schedule": cfg.train.length(), "preset": cfg.model.preset,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "highmodal": __version__},
        "tasks": rows, "summary": summary, "notes": "" if quick else cfg.notes, "reused": reused,
        "extra_models": [{"label": e.label, "model": e.model.name,
                          "preset": e.quick_preset if quick else e.model.preset, "train": e.train,
                          "task_options": e.task_options} for e in cfg.models],
    }
    report_dir = report_dir or out
    write_report(report_dir, "results", report, render_markdown(report))
    log(f"wrote {report_dir / 'results.md'} and {report_dir / 'results.json'}")
    return report


def at_val_threshold(out: dict, y: np.ndarray) -> dict:
    """Test accuracy (Wilson interval) of a binary scorer at the threshold its validation scores pick."""
    cut, acc = threshold_accuracy(out["val_y"], out["val_probs"][:, 1], y, out["probs"][:, 1])
    return {"threshold": cut, "accuracy": acc, "ci": list(wilson(round(acc * len(y)), len(y)))}


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def extra_columns(report: dict) -> list[tuple[str, str, dict]]:
    """(letter, label, description) of the extra multitask models, lettered after (a)–(c)."""
    return [(chr(ord("d") + i), e["label"], e) for i, e in enumerate(report.get("extra_models", []))]


def _cell(r: dict, m: str, top: float) -> str:
    v, ci = r["models"][m], r.get("ci", {}).get(m)
    text = f"**{_fmt(v)}**" if v == top else _fmt(v)
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _column_name(model: str, extras: list[tuple[str, str, dict]]) -> str:
    names = {"highmmt_multitask": "(a) multitask", "highmmt_single": "(b) per-task", "simple_best": "(c) simple best"}
    return names.get(model) or next(f"({letter}) {label}" for letter, label, _ in extras if label == model)


def render_markdown(report: dict) -> str:
    s = report["summary"]
    extras = extra_columns(report)
    described = "".join(
        f" ({letter}) ONE {e['model']} model (preset `{e['preset']}`) trained on all tasks"
        + (f", training overrides {e['train']}" if e["train"] else "")
        + (", with other views of some tasks' data (" + "; ".join(f"{t}: {o}" for t, o in e["task_options"].items())
           + ")" if e["task_options"] else "") + ";"
        for letter, _, e in extras)
    columns = ("highmmt_multitask", "highmmt_single", "simple_best", *(label for _, label, _ in extras))
    lines = [
        f"# Results: suite `{report['suite']}`{' (quick mode: not a result)' if report['quick'] else ''}",
        "",
        f"Produced by `{report['command']}` (highmodal {report['machine']['highmodal']}, seed {report['seed']}, "
        f"{report['schedule']}, HighMMT preset `{report['preset']}`, {report['machine']['cpus']} CPU cores, "
        f"torch {report['machine']['torch']}).",
        "",
        "Columns: (a) ONE HighMMT model trained on all tasks at once; (b) one HighMMT model per task, same "
        "preset and schedule; (c) the strongest simple baseline: every standard model of the panel in "
        "`highmodal/experiments/baselines.py` that applies to the task is fit on train, the best on validation "
        "is refit on train + validation (the winner is named under the table);" + described
        + " all on the same splits. Cells: test value of the task's primary metric (↑ higher is better, "
        "↓ lower) with its 95% interval (Wilson for accuracy, else a bootstrap over test rows). The chance "
        "column is the majority class, 0.5 AUROC, the training mean, or for forecasting the naive last-value "
        "forecast.",
        "",
    ]
    rows = []
    for r in report["tasks"]:
        best = max if r["higher_is_better"] else min
        top = best(r["models"][m] for m in columns)
        ref = r["reference"]
        ref_text = f"{_fmt(ref['value'])} ({ref['source']})" if ref["value"] is not None else ref["source"] or "–"
        vs = r["multitask_vs_simple"]
        rows.append([r["task"], r["dataset"], ", ".join(r["modalities"]),
                     f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}", _fmt(r["chance"]),
                     *(_cell(r, m, top) for m in columns), f"{vs['verdict']} ({vs['difference']:+.3f})",
                     f"{r['params']['highmmt_single']:,}", ref_text])
    lines += table(["task", "data", "modalities", "metric", "chance", *(_column_name(m, extras) for m in columns),
                    "(a) vs (c)", "params (b)", "published reference"], rows)
    sig = s["significance"]
    wins = {m: sum(1 for b in s["best_column"].values() if b == m) for m in columns}
    lines += [
        "",
        "The strongest simple baseline per task (chosen on validation; every candidate's validation and test "
        "value is in `results.json` under `simple_candidates`):",
        "",
    ]
    lines += table(["task", "winner", "validation", "candidates (validation)"], [
        [r["task"], r["simple_best_model"], _fmt(r["simple_candidates"][r["simple_best_model"]]["val"]),
         ", ".join(f"{n} {_fmt(c['val'])}" for n, c in r["simple_candidates"].items())] for r in report["tasks"]])
    thresholded = [r for r in report["tasks"] if "threshold_accuracy" in r]
    if thresholded:
        lines += ["", "Accuracy of the AUROC tasks at the threshold each model's validation scores pick (the "
                  "cut with the highest validation accuracy; (c)'s scores on validation come from its train-only "
                  "fit), with Wilson intervals:", ""]
        lines += table(["task", *(_column_name(m, extras) for m in columns)], [
            [r["task"], *(f"{_fmt(acc[m]['accuracy'])} [{acc[m]['ci'][0]:.3f}, {acc[m]['ci'][1]:.3f}]"
                          for m in columns)] for r in thresholded for acc in [r["threshold_accuracy"]]])
    folded = [r for r in report["tasks"] if "cross_validation" in r]
    if folded:
        lines += ["", "Stratified k-fold cross-validation over all rows, as these tasks' literature reports them "
                  "(mean ± standard deviation over folds, ddof 1); the multitask model (a) cannot afford k "
                  "trainings of every task and is scored on the one split above, with its interval:", ""]
        lines += table(["task", "folds", "(b) per-task", "(c) simple best", "(a) multitask, one split"], [
            [r["task"], cv["folds"], f"{cv['highmmt_single']['mean']:.4f} ± {cv['highmmt_single']['std']:.4f}",
             f"{cv['simple_best']['mean']:.4f} ± {cv['simple_best']['std']:.4f}",
             f"{_fmt(r['models']['highmmt_multitask'])} [{ci[0]:.3f}, {ci[1]:.3f}]"]
            for r in folded for cv, ci in [(r["cross_validation"], r["ci"]["highmmt_multitask"])]])
    lines += [
        "",
        "## Summary",
        "",
        "Mean skill averages each task's primary metric when higher is better, and 1 − error / chance error "
        "otherwise (for forecasting: 1 − MSE / MSE of the naive last-value forecast, negative when worse "
        "than naive), so tasks of different kinds can be averaged (×100 = points).",
        "",
        *table(["", *(_column_name(m, extras) for m in columns)], [
            ["mean skill (points)", *(f"{100 * s['mean_skill'][m]:.2f}" for m in columns)],
            ["tasks where the column is best", *(wins[m] for m in columns)],
            ["total parameters", *(f"{s['total_params'][m]:,}" if m != "simple_best" else "–" for m in columns)],
            ["total train time (s)", *(f"{s['train_seconds'][m]:.0f}" for m in columns)]]),
        "",
        f"(a) − (b): {100 * (s['mean_skill']['highmmt_multitask'] - s['mean_skill']['highmmt_single']):+.2f} "
        f"points with {s['total_params']['highmmt_single'] / s['total_params']['highmmt_multitask']:.1f}× fewer "
        f"parameters. (a) against (c) by a paired bootstrap on the same test rows (95%): significantly above on "
        f"{sig['above']}, below on {sig['below']}, no detectable difference on {sig['tie']} of {s['tasks']} tasks.",
        "",
    ]
    if report.get("reused"):
        lines += [f"Runs evaluated rather than trained again (`--reuse`, same settings; their train times are "
                  f"those runs' own): {len(report['reused'])} runs from `{Path(report['reused'][0]).parent}`"
                  f"{' and its subfolders' if len(report['reused']) > 1 else ''}.", ""]
    if report.get("notes"):
        lines += [report["notes"].strip(), ""]
    return "\n".join(lines)
