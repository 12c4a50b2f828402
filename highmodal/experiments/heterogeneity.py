"""``highmodal heterogeneity``: measure, complete and cluster the modality and interaction
heterogeneity matrices of a suite, and write the parameter groups for grouped fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from highmodal.errors import HighmodalError, did_you_mean
from highmodal.experiments.ablations import ABLATIONS, compare, pareto_variants
from highmodal.experiments.ablations import write as write_study
from highmodal.experiments.run import suite_for
from highmodal.experiments.suite import SuiteConfig, apply_quick, cap_suite, load_suite_config
from highmodal.fileio import atomic_write_text, refuse_to_replace
from highmodal.heterogeneity.clustering import distance, groups, tree
from highmodal.heterogeneity.completion import complete, holdout_error, sample_entries
from highmodal.heterogeneity.config import HeterogeneityConfig
from highmodal.heterogeneity.matrix_runs import Job, chance_loss, run_jobs, settings_for, unit_suite
from highmodal.heterogeneity.plots import dendrogram_plot, heatmap, pareto_plot
from highmodal.models.registry import create_model
from highmodal.tasks import TaskSuite

KINDS = {"unimodal": "k_unimodal", "crossmodal": "k_crossmodal"}


def measure(units: TaskSuite, hcfg: HeterogeneityConfig, cfg: SuiteConfig, full: bool, progress: bool,
            log) -> dict:
    """One kind's measurements: M scratch runs, then the sampled (or all) directed transfer runs."""
    names = [td.task.name for td in units]
    m = len(names)
    settings = settings_for(units, hcfg.preset, dict(cfg.model.options), cfg.train, hcfg.epochs, cfg.seed,
                            hcfg.workers)
    t0 = time.perf_counter()
    scratch = run_jobs(settings, [Job(n) for n in names], hcfg.workers, "scratch runs", progress=progress)
    loss = np.array([r[1] for r in scratch])
    states = {r[0].target: r[2] for r in scratch}
    rng = np.random.default_rng(cfg.seed)
    budget = round(hcfg.entries_per_unit * m)
    sampled = sample_entries(m, budget, rng)
    entries = np.array([(i, j) for i in range(m) for j in range(m) if i != j]) if full else sampled
    log(f"{m} units: {m} scratch runs + {len(entries)} of {m * (m - 1)} transfer entries")
    jobs = [Job(names[j], names[i]) for i, j in entries]
    transfers = run_jobs(settings, jobs, hcfg.workers, "transfer runs", states, progress)
    seconds = time.perf_counter() - t0

    raw = np.zeros((m, m))
    measured = np.eye(m, dtype=bool)
    entry_seconds = np.zeros((m, m))
    for (i, j), r in zip(entries, transfers, strict=True):
        raw[i, j] = r[1] - loss[j]
        measured[i, j] = True
        entry_seconds[i, j] = r[3]
    return {
        "units": names, "loss_scratch": dict(zip(names, loss.tolist(), strict=True)),
        "chance_loss": dict(zip(names, (chance_loss(td) for td in units), strict=True)),
        "measured": measured.tolist(), "transfer_raw": raw.tolist(),
        "runs": m + len(entries), "entries_measured": len(entries), "entries_total": m * (m - 1),
        "seconds": seconds, "scratch_seconds": [r[3] for r in scratch], "entry_seconds": entry_seconds.tolist(),
        "run_seconds": sum(r[3] for r in scratch + transfers),
    }


def analyse(meas: dict, hcfg: HeterogeneityConfig, seed: int) -> dict:
    """Normalise, complete, check the completion on held-out entries, cluster. Needs only the
    measurements, so ``--reanalyse`` can revisit these choices without training anything."""
    names = meas["units"]
    m = len(names)
    loss = np.array([meas["loss_scratch"][n] for n in names])
    scale = {"chance": np.array([meas["chance_loss"][n] for n in names]), "relative": loss, "none": np.ones(m)}
    t = np.array(meas["transfer_raw"]) / scale[hcfg.normalise][None, :]
    measured = np.array(meas["measured"])
    filled = complete(t, measured, hcfg.rank)
    d = distance(filled)
    result = {**meas, "transfer": filled.tolist(), "distance": d.tolist(),
              "holdout": holdout_error(t, measured, hcfg.holdout_frac, hcfg.rank, np.random.default_rng(seed + 1))}
    sampled = sample_entries(m, round(hcfg.entries_per_unit * m), np.random.default_rng(seed))
    if measured.all() and len(sampled) < m * (m - 1):  # how well the O(M) sample would have done on the rest
        known = np.eye(m, dtype=bool)
        known[sampled[:, 0], sampled[:, 1]] = True
        est = complete(t, known, hcfg.rank)
        left = ~known
        mean = t[known & ~np.eye(m, dtype=bool)].mean()
        result["sampled_vs_full"] = {
            "entries_sampled": len(sampled),
            "rmse_completion": float(np.sqrt(np.mean((est[left] - t[left]) ** 2))),
            "rmse_mean_predictor": float(np.sqrt(np.mean((mean - t[left]) ** 2))),
        }
        if "entry_seconds" in meas:
            result["sampled_vs_full"]["sampled_run_seconds"] = float(
                sum(meas["scratch_seconds"]) + np.array(meas["entry_seconds"])[known].sum())
    if m > 2:
        result["linkage"] = tree(d, hcfg.linkage).tolist()
    result["groups"] = {str(k): groups(d, k, hcfg.linkage) for k in range(1, m + 1)}
    return result


def load_config(config: str, quick: bool) -> tuple[SuiteConfig, Path, HeterogeneityConfig]:
    """The suite config and its heterogeneity section; ``quick`` applies the suite's quick settings
    (tasks, epochs, sample caps, preset) to transfer runs and grouped studies alike."""
    cfg, config_dir = load_suite_config(config)
    hcfg = cfg.heterogeneity
    if quick:
        apply_quick(cfg)
        hcfg = dataclasses.replace(hcfg, epochs=cfg.quick.epochs, max_train=cfg.quick.max_train,
                                   max_eval=cfg.quick.max_eval, preset=cfg.quick.preset,
                                   finetune_epochs=cfg.quick.epochs, study_max_train=cfg.quick.max_train)
    return cfg, config_dir, hcfg


def _read(folder: Path) -> dict:
    path = folder / "heterogeneity.json"
    if not path.is_file():
        raise HighmodalError(f"{path}: not found; run `highmodal heterogeneity` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HighmodalError(f"{path}: not valid JSON ({e})") from None


def _read_measurements(earlier: dict, folder: Path, kind: str, suite_units: TaskSuite) -> dict:
    """One kind's measurements from an earlier report, checked against this suite's units."""
    meas = earlier.get(kind, {})
    names = [td.task.name for td in suite_units]
    if meas.get("units") != names:
        raise HighmodalError(f"{folder / 'heterogeneity.json'}: its {kind} units {meas.get('units')} are not this "
                             f"suite's {names}")
    if "chance_loss" not in meas:  # written before input-blind losses were recorded
        meas["chance_loss"] = {td.task.name: chance_loss(td) for td in suite_units}
    keep = ("units", "loss_scratch", "chance_loss", "measured", "transfer_raw", "runs", "entries_measured",
            "entries_total", "seconds", "scratch_seconds", "entry_seconds", "run_seconds")
    return {k: meas[k] for k in keep if k in meas}


def budget_groups(cfg: SuiteConfig, suite: TaskSuite, sizes: dict[str, int], budget: int) -> dict[str, int]:
    """The (k_unimodal, k_crossmodal) with the most groups whose grouped suite model has at most
    ``budget`` parameters; ties go to more crossmodal groups (the paper finds more interaction than
    modality heterogeneity), then to fewer parameters."""
    model = create_model(cfg.model.name, suite.specs, [td.task for td in suite], preset=cfg.model.preset,
                         **cfg.model.options)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    base, enc, cross = count(model), count(model.encoder), count(model.crossmodal)
    options = [(ku + kc, kc, -(base + (ku - 1) * enc + (kc - 1) * cross), ku)
               for ku in range(1, sizes["unimodal"] + 1) for kc in range(1, sizes["crossmodal"] + 1)
               if base + (ku - 1) * enc + (kc - 1) * cross <= budget]
    if not options:
        raise HighmodalError(f"--param-budget {budget:,}: below the shared model's {base:,} parameters")
    _, kc, _, ku = max(options)
    return {"unimodal": ku, "crossmodal": kc}


def quantify(config: str, out: Path, data_root: Path | None, quick: bool = False, full: bool = False,
             workers: int | None = None, overwrite: bool = False, progress: bool = True, command: str = "",
             log=print, param_budget: int | None = None, reanalyse: Path | None = None) -> dict:
    """Measure both kinds, then pick the group counts: the config's ``k_unimodal``/``k_crossmodal``,
    or the most groups whose grouped model fits ``param_budget`` parameters. ``reanalyse`` takes the
    measurements of an earlier output folder instead of training."""
    cfg, config_dir, hcfg = load_config(config, quick)
    if workers is not None:
        hcfg = dataclasses.replace(hcfg, workers=workers)
    refuse_to_replace(out, overwrite)
    suite = cap_suite(suite_for(cfg, config_dir, data_root), hcfg.max_train, hcfg.max_eval, cfg.seed)
    t0 = time.perf_counter()
    earlier = _read(reanalyse) if reanalyse is not None else None
    if earlier is not None:
        full = earlier["full"]
    report: dict = {"command": command, "suite": cfg.name, "quick": quick, "full": full, "seed": cfg.seed,
                    "settings": dataclasses.asdict(hcfg)}
    chosen: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        units = unit_suite(suite, kind)
        if units is None:
            report[kind] = {"skipped": f"fewer than two {kind} units in the suite"}
            continue
        if earlier is not None:
            meas = _read_measurements(earlier, reanalyse, kind, suite_units=units)
        else:
            log(f"{kind} heterogeneity")
            meas = measure(units, hcfg, cfg, full, progress, log)
        report[kind] = analyse(meas, hcfg, cfg.seed)
    sizes = {kind: len(report[kind].get("units", [None])) for kind in KINDS}
    ks = ({kind: min(getattr(hcfg, field), sizes[kind]) for kind, field in KINDS.items()} if param_budget is None
          else budget_groups(cfg, suite, sizes, param_budget))
    for kind in KINDS:
        if "units" in report[kind]:
            report[kind]["k"] = ks[kind]
            chosen[f"{kind}_groups"] = dict(zip(report[kind]["units"], report[kind]["groups"][str(ks[kind])],
                                                strict=True))
    report["seconds"] = time.perf_counter() - t0
    write(report, chosen, out)
    return report


def write(report: dict, chosen: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        res = report[kind]
        if "skipped" in res:
            continue
        d, measured = np.array(res["distance"]), np.array(res["measured"])
        title = (f"{kind} heterogeneity d(i, j): {res['entries_measured']} of {res['entries_total']} "
                 "transfer entries measured")
        heatmap(d, measured, res["units"], title, out / f"{kind}_heatmap.png")
        if "linkage" in res:
            dendrogram_plot(np.array(res["linkage"]), res["units"], f"{kind} units clustered by d",
                            out / f"{kind}_dendrogram.png")
    atomic_write_text(out / "heterogeneity.json", json.dumps(report, indent=1))
    atomic_write_text(out / "groups.json", json.dumps(chosen, indent=2))


def study(config: str, heterogeneity_dir: Path, out: Path, data_root: Path | None, which: str, quick: bool = False,
          seeds: int | None = None, names: list[str] | None = None, overwrite: bool = False, progress: bool = True,
          command: str = "", log=print) -> dict:
    """``which`` = "ablations" (Table 5) or "pareto" (k sweep); results in ``out/<which>.json/.md``."""
    cfg, config_dir, hcfg = load_config(config, quick)
    report = _read(heterogeneity_dir)
    refuse_to_replace(out, overwrite)
    variants = ABLATIONS if which == "ablations" else pareto_variants(report)
    if names:
        known = {v.name for v in variants}
        for n in names:
            if n not in known:
                raise HighmodalError(f"--variants: unknown variant {n!r}{did_you_mean(n, known)}; "
                                     f"known: {', '.join(sorted(known))}")
        variants = [v for v in variants if v.name in names]
    suite = suite_for(cfg, config_dir, data_root)
    if hcfg.study_max_train is not None:
        suite = cap_suite(suite, hcfg.study_max_train, hcfg.max_eval, cfg.seed)
    default_k = {"unimodal": hcfg.k_unimodal, "crossmodal": hcfg.k_crossmodal}
    rows = compare(cfg, config_dir, suite, report, variants, seeds or hcfg.seeds, hcfg.finetune_epochs, default_k,
                   out, progress, log)
    write_study(rows, out, which, command)
    if which == "pareto":
        pareto_plot(rows, out / "pareto.png")
    return rows
