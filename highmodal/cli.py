"""``highmodal <command>``: parse arguments, load config, call the library. No logic of its own."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
from importlib import resources
from pathlib import Path

from highmodal import __version__
from highmodal.errors import HighmodalError


def _data(args) -> Path | None:
    from highmodal.data.loaders import default_data_root

    return default_data_root(args.data_root)


def _report(results: dict, split: str, run_dir: Path, json_path: Path | None, extra: dict | None = None) -> None:
    from highmodal.fileio import atomic_write_text
    from highmodal.training.evaluation import aggregate, format_table

    print(format_table(results, split))
    payload = {"split": split, "run_dir": str(run_dir), "aggregate_skill": aggregate(results), "tasks": results}
    payload |= extra or {}
    out = json_path or run_dir / f"eval_{split}.json"
    atomic_write_text(out, json.dumps(payload, indent=2))
    print(f"\nmean skill {payload['aggregate_skill']:.4f}; metrics written to {out}")


def _train(config_path: Path, cfg, args) -> None:
    from highmodal.experiments.run import train_experiment
    from highmodal.training.distributed import is_main

    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    if getattr(args, "model", None) and args.model != cfg.model.name:
        # Another architecture: the config's preset and options belong to the old one.
        cfg.model.name, cfg.model.options = args.model, {}
        from highmodal.models.registry import default_preset

        cfg.model.preset = args.preset or default_preset(args.model)
    elif getattr(args, "preset", None):
        cfg.model.preset = args.preset
    if getattr(args, "balance", None):
        cfg.train.balance = args.balance
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    init = getattr(args, "init", None)
    run_dir, results, _ = train_experiment(cfg, out, config_path.parent, _data(args), args.overwrite,
                                           progress=not args.no_progress, resume=bool(getattr(args, "resume", None)),
                                           init=Path(init) if init else None)
    if not is_main():  # another process of a torchrun launch: rank 0 reports
        return
    print(f"run directory: {run_dir}\n")
    _report(results, "test", run_dir, None)
    print(f"reproduce: highmodal evaluate {run_dir} --split test")


def cmd_demo(args) -> None:
    from highmodal.config import ExperimentConfig, from_mapping, read_yaml

    with resources.as_file(resources.files("highmodal") / "configs" / "demo.yaml") as path:
        cfg = from_mapping(ExperimentConfig, read_yaml(path), "demo.yaml")
        _train(path, cfg, args)


def cmd_train(args) -> None:
    from highmodal.config import load_experiment

    if args.resume:
        from highmodal.training.checkpoint import RunDir

        run_dir = Path(args.resume)
        cfg, config_dir = _run_config(RunDir.interrupted_config(run_dir).parent)
        args.out, args.overwrite = str(run_dir), False
        _train(config_dir / "config.yaml", cfg, args)
        return
    if not args.config:
        raise HighmodalError("train needs --config CONFIG.yaml (or --resume RUN_DIR)")
    path = Path(args.config)
    cfg = load_experiment(path)
    if args.groups:
        from highmodal.heterogeneity.grouping import read_groups

        cfg.model.options.update(read_groups(Path(args.groups)))
    _train(path, cfg, args)


def _run_config(run_dir: Path):
    from highmodal.config import ExperimentConfig, from_mapping, read_yaml

    raw = read_yaml(run_dir / "config.yaml")
    config_dir = Path(raw.pop("config_dir", "."))
    return from_mapping(ExperimentConfig, raw, str(run_dir / "config.yaml")), config_dir


def cmd_evaluate(args) -> None:
    from highmodal.experiments.run import suite_for
    from highmodal.training.checkpoint import load
    from highmodal.training.evaluation import evaluate_suite

    run_dir = Path(args.run_dir)
    model = load(run_dir, options=_inference(args))
    cfg, config_dir = _run_config(run_dir)
    suite = suite_for(cfg, config_dir, _data(args))
    subset = set(args.modalities.split(",")) if args.modalities else None
    if subset is not None:
        known = {m for td in suite for m in td.task.modalities}
        if not subset <= known:
            raise HighmodalError(f"--modalities: {', '.join(sorted(subset - known))} not in the suite "
                                 f"(modalities: {', '.join(sorted(known))})")
    if args.baseline and args.split != "test":
        raise HighmodalError("--baseline: compares on the test split (the baseline is chosen on validation); "
                             f"drop --split {args.split}")
    results = evaluate_suite(model, suite, args.split, cfg.train.eval_batch_size, modalities=subset,
                             predictions=args.baseline)
    default = run_dir / (f"eval_{args.split}{'-' + '+'.join(sorted(subset)) if subset else ''}"
                         f"{'-' + args.inference if args.inference else ''}.json")
    extra = None
    if args.baseline:
        from highmodal.experiments.baselines import against_simple, format_against_simple

        extra = {"against_simple": against_simple(suite, results, cfg.seed)}
        for r in results.values():
            del r["pred"], r["probs"], r["y"]
    _report(results, args.split, run_dir, Path(args.json) if args.json else default, extra)
    if extra:
        print("\n" + format_against_simple(extra["against_simple"]))


def _inference(args) -> dict | None:
    """``--inference``: the OmniVec2 prediction path to use instead of the one the run was trained with."""
    return {"inference": args.inference} if args.inference else None


def cmd_predict(args) -> None:
    import io

    from highmodal.fileio import atomic_write_text, refuse_to_replace
    from highmodal.training.checkpoint import load
    from highmodal.training.predict import predict_file, training_entry

    out = Path(args.out)
    refuse_to_replace(out, args.overwrite)
    subset = args.modalities.split(",") if args.modalities else None
    header, rows, runtime, diff = predict_file(
        load(args.run_dir, options=_inference(args)), args.task, Path(args.input), modalities=subset,
        entry=training_entry(Path(args.run_dir), args.task), runtime=args.runtime)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    how = "" if runtime == "eager" else f" (max relative difference from eager on the first batch {diff:.2g})"
    print(f"wrote {len(rows)} predictions for task {args.task!r} to {out}; runtime {runtime}{how}")


def _out(args, command: str, config: str | Path) -> Path:
    """``--out``, else ``runs/<command>-<config name>[-quick]``."""
    quick = "-quick" if getattr(args, "quick", False) else ""
    return Path(args.out) if args.out else Path("runs") / f"{command}-{Path(config).stem}{quick}"


def cmd_suite(args) -> None:
    from highmodal.experiments.suite import run_suite

    out = _out(args, "suite", args.suite)
    report = Path(args.report_dir) if args.report_dir else Path("docs") if args.docs else out
    command = "highmodal " + " ".join(args.argv)
    result = run_suite(args.suite, out, report, _data(args), args.quick, args.overwrite, not args.no_progress,
                       command, reuse=Path(args.reuse) if args.reuse else None)
    s = result["summary"]["mean_skill"]
    sig = result["summary"]["significance"]
    print(f"mean skill: multitask {100 * s['highmmt_multitask']:.2f}, per-task {100 * s['highmmt_single']:.2f}, "
          f"strongest simple baseline {100 * s['simple_best']:.2f} points; multitask vs simple baseline: "
          f"above on {sig['above']}, below on {sig['below']}, tie on {sig['tie']} tasks")


def cmd_heterogeneity(args) -> None:
    from highmodal.experiments.heterogeneity import quantify

    out = _out(args, "heterogeneity", args.config)
    report = quantify(args.config, out, _data(args), args.quick, args.full, args.workers, args.overwrite,
                      not args.no_progress, "highmodal " + " ".join(args.argv), param_budget=args.param_budget,
                      reanalyse=Path(args.reanalyse) if args.reanalyse else None)
    for kind in ("unimodal", "crossmodal"):
        r = report[kind]
        if "skipped" in r:
            print(f"{kind}: skipped ({r['skipped']})")
            continue
        h = r["holdout"]
        print(f"{kind}: {len(r['units'])} units, {r['entries_measured']}/{r['entries_total']} entries measured "
              f"in {r['seconds']:.0f} s; held-out completion RMSE {h['rmse_completion']:.4f} "
              f"(mean predictor {h['rmse_mean_predictor']:.4f}); {r['k']} groups")
    print(f"wrote {out / 'heterogeneity.json'}, {out / 'groups.json'} and plots; "
          f"fine-tune with: highmodal train --config CONFIG --init RUN --groups {out / 'groups.json'}")


def cmd_study(args) -> None:
    from highmodal.experiments.heterogeneity import study

    out = _out(args, args.command, args.config)
    rows = study(args.config, Path(args.heterogeneity), out, _data(args), args.command, args.quick, args.seeds,
                 args.variants.split(",") if args.variants else None, args.overwrite, not args.no_progress,
                 "highmodal " + " ".join(args.argv))
    from highmodal.experiments.ablations import markdown

    print(markdown(rows))
    print(f"wrote {out / (args.command + '.json')}")


def cmd_variants(args) -> None:
    from highmodal.experiments.variants import markdown, run_study

    out = _out(args, f"variants-{args.study}", args.config)
    report = run_study(args.config, args.study, out, _data(args), args.seeds,
                       args.variants.split(",") if args.variants else None, args.quick, args.overwrite,
                       not args.no_progress, "highmodal " + " ".join(args.argv), reuse=args.reuse)
    print(markdown(report))
    print(f"wrote {out / 'variants.json'} and {out / 'variants.md'}")


def cmd_probe(args) -> None:
    from highmodal.experiments.probe import run_probe

    run_dir = Path(args.run_dir)
    config = Path(args.config)
    out = _out(args, "probe", config)
    report = run_probe(run_dir, config, out, _data(args), baseline=not args.no_baseline, overwrite=args.overwrite,
                       progress=not args.no_progress, command="highmodal " + " ".join(args.argv), seed=args.seed)
    print(f"\nprobe of {run_dir} ({out / 'probe.json'}):")
    for task, entry in report["tasks"].items():
        print(f"  {task}: " + "; ".join(entry["tokenizers"]))
        for label in ("trained", "random_init"):
            if label in entry:
                print(f"    {label:<12} " + "  ".join(f"{k} {v:.4f}" for k, v in entry[label].items()))


def cmd_bench(args) -> None:
    from highmodal.bench.speed import run_speed, runtimes_from_flag

    for line in run_speed(model=args.model, workload=args.workload, preset=args.preset, device=args.device,
                          amp=args.amp, compile=args.compile, batch=args.batch, steps=args.steps, warmup=args.warmup,
                          repeats=args.repeats, threads=args.threads, memory=not args.no_memory,
                          peak_tflops=args.peak_tflops, seed=args.seed,
                          runtimes=runtimes_from_flag(args.runtimes, args.device, args.amp, args.compile)):
        print(json.dumps(line), flush=True)


def cmd_bench_contention(args) -> None:
    from highmodal.bench.contention import run_contention

    report = run_contention(model=args.model, batch=args.batch, steps=args.steps, repeats=args.repeats,
                            threads=args.threads, contend=args.contend, policies=tuple(args.policies.split(",")),
                            log=lambda line: print(line, flush=True))
    if args.json:
        from highmodal.fileio import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(report, indent=2))


def cmd_bench_gpu(args) -> None:
    from highmodal.bench.gpu import main_from

    main_from(Path(args.out), Path(args.doc) if args.doc else None, args.quick, args.device, args.timeout)


def parse_int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HighmodalError(f"{flag}: {text!r} is not a whole number; give a comma-separated list") from None


def cmd_bench_scaling(args) -> None:
    from highmodal.bench.scaling import check_out, run_scaling, write_scaling

    out = Path(args.out) if args.out else Path("runs") / "bench-scaling"
    check_out(out, args.overwrite)
    points = {k: [parse_int(v, f"--{k}") for v in getattr(args, k).split(",")] for k in ("tasks", "lengths", "batches")}
    result = run_scaling(curves=args.curves.split(","), **points, batch=args.batch, rows=args.rows, steps=args.steps,
                         repeats=args.repeats, threads=args.threads, reference=args.reference,
                         on_point=lambda point: print(json.dumps(point), flush=True))
    paths = write_scaling(result, out)
    print(f"wrote {', '.join(str(p) for p in paths)} ({result['seconds']:.0f} s of measuring)")


def cmd_export(args) -> None:
    from highmodal.training.export import export_run

    out, manifest = export_run(Path(args.run_dir), args.format, Path(args.out) if args.out else None, args.task,
                               args.overwrite)
    for name, entry in manifest["tasks"].items():
        print(f"{name}: {out / entry['file']} (checked against the model: max abs difference "
              f"{entry['max_abs_diff']:.1e})")
    print(f"inputs, outputs and classes: {out / 'manifest.json'}")


def cmd_pretrain(args) -> None:
    from highmodal.experiments.pretraining import load_pretrain_config, pretrain

    config = Path(args.config)
    cfg = load_pretrain_config(config, args.quick)
    out = _out(args, "pretrain", config)
    summary = pretrain(cfg, config, out, _data(args), args.overwrite, not args.no_progress, quick=args.quick,
                       resume=args.resume)
    if "run" not in summary:  # a torchrun process other than rank 0
        return
    stages = " + ".join(f"stage {n} ({s['steps']} steps, {s['seconds']:.0f} s)" for n, s in summary["stages"].items())
    print(f"pretrained {stages}: {summary['run']}\n"
          f"fine-tune and compare with scratch: highmodal transfer --config {config} --pretrained {summary['run']}")


def cmd_transfer(args) -> None:
    from highmodal.experiments.pretraining import markdown, run_transfer

    config = Path(args.config)
    out = _out(args, "transfer", config)
    report = run_transfer(config, Path(args.pretrained), out, _data(args), args.quick, args.overwrite, args.reuse,
                          not args.no_progress, "highmodal " + " ".join(args.argv),
                          parts=args.parts.split(",") if args.parts else None)
    print(markdown(report))
    written = ["transfer.json", "transfer.md"] + (["fewshot.png"] if report["fewshot"] else [])
    print("wrote " + ", ".join(str(out / name) for name in written))


def cmd_modalities(args) -> None:
    from highmodal.modalities.spec import KINDS
    from highmodal.modalities.standardize import SUMMARY as standardizer
    from highmodal.modalities.tokenizers import TOKENIZERS

    rows = [{"kind": kind, "highmmt_standardizer": standardizer,
             "omnivec2_tokenizer": TOKENIZERS.get(kind).__name__, "tokenizer_design": TOKENIZERS.get(kind).summary,
             "tokenizer_options": {f.name: f.default for f in dataclasses.fields(TOKENIZERS.get(kind).Options)}}
            for kind in KINDS]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    print(f"HighMMT standardizer, the same for every kind: {standardizer}\n")
    width = max(len(r["kind"]) for r in rows)
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["tokenizer_options"].items()) or "no options"
        print(f"{r['kind']:<{width}}  {r['omnivec2_tokenizer']}: {r['tokenizer_design']} ({opts})")


def cmd_datasets(args) -> None:
    from highmodal.data.loaders import LOADERS, LoadContext

    ctx = LoadContext(data_root=_data(args))
    print(f"data root: {ctx.data_root or '(none: set --data-root or HIGHMODAL_DATA)'}\n")
    rows = [("source", "modalities", "data", "description")]
    for name, loader in LOADERS.items():
        rows.append((name, ",".join(sorted(set(loader.kinds))) if len(loader.kinds) < 4 else "any",
                     "present" if loader.available(ctx) else "missing", loader.description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3]]))


def cmd_config(args) -> None:
    from highmodal.config import ExperimentConfig, reference
    from highmodal.data.loaders import LOADERS, TaskEntry

    sources = args.source.split(",") if args.source else list(LOADERS)
    lines = ["# A train config (YAML): the top-level keys, then each task entry's keys by source.", ""]
    lines += [*reference(ExperimentConfig), "", "# tasks[i], every source:", *reference(TaskEntry, "  ")]
    for name in sources:
        loader = LOADERS.get(name)
        lines += ["", f"# tasks[i] with source: {name} ({loader.description})"]
        lines += reference(loader.options, "  ")
    print("\n".join(lines))


# The commands that share a flag (build_parser declares each flag once, as an argparse parent).
DATA_COMMANDS = {"demo", "train", "evaluate", "suite", "heterogeneity", "ablations", "pareto", "variants", "probe",
                 "pretrain", "transfer", "datasets"}
PROGRESS_COMMANDS = {"demo", "train", "suite", "heterogeneity", "ablations", "pareto", "variants", "probe",
                     "pretrain", "transfer"}
OVERWRITE_COMMANDS = PROGRESS_COMMANDS | {"predict", "export", "scaling"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="highmodal", description="Train one model across many modalities and tasks.")
    p.add_argument("--version", action="version", version=f"highmodal {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    sub = p.add_subparsers(dest="command", required=True)

    def flag(*names: str, **kwargs) -> argparse.ArgumentParser:
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument(*names, **kwargs)
        return parent

    debug = flag("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    shared = {
        flag("--data-root", help="folder of shared datasets (default: $HIGHMODAL_DATA)"): DATA_COMMANDS,
        flag("--overwrite", action="store_true", help="replace an existing output (run directory, folder or "
             "file); without it nothing on disk is replaced"): OVERWRITE_COMMANDS,
        flag("--no-progress", action="store_true", help="hide the progress bar"): PROGRESS_COMMANDS,
    }

    def command(subparsers, name: str, text: str) -> argparse.ArgumentParser:
        """A subcommand with the flags it shares with others (argparse parents, each declared once above)."""
        return subparsers.add_parser(name, help=text,
                                     parents=[debug, *(parent for parent, users in shared.items() if name in users)])

    def inference(sp):
        sp.add_argument("--inference", choices=["single", "self", "fused"],
                        help="OmniVec2 prediction path (default: the run's model.inference)")

    def training(sp):
        sp.add_argument("--out", help="run directory (default: runs/<name>)")
        sp.add_argument("--epochs", type=int, help="override train.epochs")
        sp.add_argument("--model", help="architecture to train instead of the config's (highmmt, omnivec2)")
        sp.add_argument("--preset", help="model preset (default: the config's, or the --model's default)")
        sp.add_argument("--balance", help="task balancing: equal, dwa or uncertainty (train.balance)")

    training(command(sub, "demo", "train + evaluate HighMMT on the embedded demo suite"))
    sp = command(sub, "train", "train a model from a YAML config")
    sp.add_argument("--config", help="experiment YAML")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    sp.add_argument("--init", metavar="RUN_DIR", help="start from a trained run's weights (fine-tuning)")
    sp.add_argument("--groups", metavar="JSON", help="parameter groups (from `highmodal heterogeneity`): one "
                    "encoder / crossmodal copy per group, each initialised from --init's shared one")
    training(sp)
    sp = command(sub, "evaluate", "evaluate a run directory on a split")
    sp.add_argument("run_dir")
    sp.add_argument("--split", default="test", choices=["train", "val", "test"])
    sp.add_argument("--json", help="where to write the metrics JSON (default: RUN_DIR/eval_<split>.json)")
    sp.add_argument("--modalities", help="comma-separated inputs to use; the others are withheld (robustness)")
    sp.add_argument("--baseline", action="store_true", help="also fit the strongest simple baseline per task "
                    "(chosen on validation) and compare on the same test rows, paired, with 95%% intervals")
    inference(sp)
    sp = command(sub, "predict", "predict one task on new inputs (an .npz named by modality, "
                                 "or a file in the task's training format)")
    sp.add_argument("run_dir")
    sp.add_argument("--task", required=True)
    sp.add_argument("--input", required=True, help=".npz with one array per modality (named as in the model), or "
                    "a file as the task was trained from: its .npz layout, a .ts file, a manifest CSV/JSONL")
    sp.add_argument("--out", required=True, help="CSV to write")
    sp.add_argument("--modalities", help="comma-separated subset of the task's inputs to predict from")
    sp.add_argument("--runtime", default="eager", help="inference engine: eager, bf16, compile, compile-bf16, "
                    "onnx (each checked against eager fp32 on the first batch, within its tolerance) or auto, the "
                    "fastest that passes (default: eager)")
    inference(sp)
    sp = command(sub, "suite", "benchmark: one multitask model vs per-task models vs the strongest "
                               "simple baseline")
    sp.add_argument("--suite", required=True, help="packaged suite name (demo, real) or a suite YAML")
    sp.add_argument("--quick", action="store_true", help="few tasks, epochs and samples: a smoke test")
    sp.add_argument("--out", help="where the runs go (default: runs/suite-<name>)")
    sp.add_argument("--report-dir", help="where results.md/.json go (default: --out)")
    sp.add_argument("--docs", action="store_true", help="write results.md/.json into ./docs, the project's "
                    "published results, instead of --out")
    sp.add_argument("--reuse", metavar="DIR", help="evaluate the finished runs of an earlier suite output that "
                    "have the same settings instead of training them again; the others are trained")
    sp = command(sub, "heterogeneity", "measure, complete and cluster modality and interaction "
                                       "heterogeneity (HighMMT) into parameter groups")
    sp.add_argument("--config", required=True, help="packaged suite name (demo, real) or a suite YAML")
    sp.add_argument("--out", help="output folder (default: runs/heterogeneity-<name>)")
    sp.add_argument("--full", action="store_true", help="measure every entry (O(M^2) runs) instead of an O(M) sample")
    sp.add_argument("--quick", action="store_true", help="the suite's quick settings: a smoke test")
    sp.add_argument("--workers", type=int, help="parallel transfer runs (default: heterogeneity.workers)")
    sp.add_argument("--reanalyse", metavar="DIR", help="reuse the transfer measurements of an earlier output "
                    "folder: redo normalisation, completion and clustering with the current settings, no training")
    sp.add_argument("--param-budget", type=int, help="choose the group counts: the most groups whose model has "
                    "at most this many parameters (default: heterogeneity.k_unimodal / k_crossmodal)")
    for name, text in (("ablations", "grouped fine-tuning ablations (share none/unimodal/crossmodal/all, random and "
                                      "feature-difference groups, no embeddings, no pre-training) over seeds"),
                       ("pareto", "performance vs parameters over the number of heterogeneity-aware groups")):
        sp = command(sub, name, text)
        sp.add_argument("--config", required=True, help="packaged suite name (demo, real) or a suite YAML")
        sp.add_argument("--heterogeneity", required=True, metavar="DIR", help="output of `highmodal heterogeneity`")
        sp.add_argument("--out", help=f"output folder (default: runs/{name}-<name>)")
        sp.add_argument("--seeds", type=int, help="seeds per variant (default: heterogeneity.seeds)")
        sp.add_argument("--variants", help="comma-separated subset of the variants")
        sp.add_argument("--quick", action="store_true", help="the suite's quick settings: a smoke test")
    sp = command(sub, "variants", "architecture/training ablations of a suite's extra model over seeds "
                                  "(omnivec2: the paper's Table 12 and its training choices)")
    sp.add_argument("--config", required=True, help="packaged suite name (demo, real) or a suite YAML")
    sp.add_argument("--study", default="omnivec2", help="which study (default: omnivec2)")
    sp.add_argument("--out", help="output folder (default: runs/variants-<study>-<name>)")
    sp.add_argument("--seeds", type=int, help="seeds per variant (default: variants.seeds)")
    sp.add_argument("--variants", help="comma-separated subset of the variants")
    sp.add_argument("--quick", action="store_true", help="the suite's quick settings and one seed: a smoke test")
    sp.add_argument("--reuse", action="store_true", help="evaluate runs already finished in --out instead of "
                    "training them again")
    sp = command(sub, "probe", "two FC layers on a trained model's frozen embeddings, for new tasks")
    sp.add_argument("run_dir")
    sp.add_argument("--config", required=True, help="YAML with name, tasks (as in a train config), probe settings")
    sp.add_argument("--out", help="output folder (default: runs/probe-<config name>)")
    sp.add_argument("--no-baseline", action="store_true", help="skip the probe on a randomly initialised copy")
    sp.add_argument("--seed", type=int, help="probe and random-init seed (default: the config's seed)")
    sp = command(sub, "export", "each task's inference graph as an ONNX or TorchScript file, "
                                "checked against the model")
    sp.add_argument("run_dir")
    sp.add_argument("--format", required=True, help="onnx (needs onnx, onnxscript, onnxruntime: pip install "
                    "'highmodal[export]') or torchscript")
    sp.add_argument("--task", action="append", help="a task to export (repeat for several; default: every task)")
    sp.add_argument("--out", help="output folder (default: RUN_DIR/export)")
    sp = command(sub, "pretrain", "OmniVec2 masked pretraining: stage 1 per modality, stage 2 on "
                                  "paired modalities through the fused path")
    sp.add_argument("--config", required=True, help="pretraining YAML (suite, model label, stages, masking)")
    sp.add_argument("--out", help="run directory (default: runs/pretrain-<config name>)")
    sp.add_argument("--quick", action="store_true", help="the config's quick settings: a smoke test")
    sp.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (same --config): "
                    "finished stages are kept, the current one continues from its last checkpoint")
    sp = command(sub, "transfer", "fine-tuning from scratch vs from pretrained stages over seeds, "
                                  "few-shot probes and cross-modal retrieval")
    sp.add_argument("--config", required=True, help="the pretraining YAML (its transfer: section)")
    sp.add_argument("--pretrained", required=True, metavar="RUN", help="a `highmodal pretrain` run directory")
    sp.add_argument("--out", help="output folder (default: runs/transfer-<config name>)")
    sp.add_argument("--quick", action="store_true", help="the config's quick settings and one seed: a smoke test")
    sp.add_argument("--reuse", action="store_true", help="evaluate fine-tuning runs already finished in --out")
    sp.add_argument("--parts", help="comma-separated subset of finetune,fewshot,retrieval (default: transfer.parts)")
    sp = command(sub, "config", "every config key with its type and default, read from the code")
    sp.add_argument("--reference", action="store_true", help="print the reference (the default and only view)")
    sp.add_argument("--source", help="only these data sources' task keys (comma-separated), e.g. ts,tu,npz")
    bench = command(sub, "bench", "benchmarks against the original implementations").add_subparsers(
        dest="bench_command", required=True)
    sp = command(bench, "speed", "train/inference samples per second, model FLOPs, peak memory and "
                                 "parameters of a model and of its original implementation on one workload: one "
                                 "JSON line per model, then their ratios (a model with no original code: its "
                                 "tokens/s and MFU)")
    sp.add_argument("--model", default="highmmt", help="model to measure: highmmt or omnivec2 (default: highmmt)")
    sp.add_argument("--workload", help="input shapes and tasks (default: the model's, highmmt-4task or "
                    "omnivec2-pair)")
    sp.add_argument("--preset", help="model size (default: the workload's; fixed where the original is compared)")
    sp.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    sp.add_argument("--amp", choices=["bf16"], help="autocast our model to bf16 (the reference stays fp32)")
    sp.add_argument("--compile", action="store_true", help="torch.compile our model (the reference stays eager)")
    sp.add_argument("--batch", type=int, default=32, help="samples per task in a step (default: 32)")
    sp.add_argument("--steps", type=int, default=10, help="steps per timed run (default: 10)")
    sp.add_argument("--warmup", type=int, default=3, help="untimed steps first, at least 2 (default: 3)")
    sp.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported (default: 5)")
    sp.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    sp.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (on CPU it "
                    "builds and steps each model again in a fresh process)")
    sp.add_argument("--peak-tflops", type=float, help="the device's dense peak TFLOP/s in our model's dtype "
                    "(bf16 with --amp bf16), for MFU (default: a datasheet table of NVIDIA GPUs; none on CPU)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the weights and synthetic inputs (default: 0)")
    sp.add_argument("--runtimes", help="also time inference through these engines (comma-separated: eager, bf16, "
                    "compile, compile-bf16, onnx), each with its max difference from fp32 eager; the best sets "
                    "infer_ratio. Default auto: those `predict --runtime auto` chooses among (bf16, onnx where "
                    "they run); none: eager only")
    sp = command(bench, "contention", "samples/s of the speed workload alone and beside K busy "
                                      "processes, per OpenMP wait policy (each measured in a fresh process): one JSON "
                                      "line per policy")
    sp.add_argument("--model", default="highmmt", help="model to measure (default: highmmt)")
    sp.add_argument("--contend", type=int, default=1, help="busy single-threaded processes beside it (default: 1)")
    sp.add_argument("--policies", default="torch,highmodal", help="comma-separated: torch (OpenMP's default, "
                    "spinning), highmodal (the library's default), passive, spin:N (default: torch,highmodal)")
    sp.add_argument("--batch", type=int, default=32, help="samples per task in a step (default: 32)")
    sp.add_argument("--steps", type=int, default=10, help="steps per timed run (default: 10)")
    sp.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default: 3)")
    sp.add_argument("--threads", type=int, help="torch intra-op threads (default: the CPUs available)")
    sp.add_argument("--json", help="also write the report to this file")
    sp.set_defaults(func=cmd_bench_contention)
    sp = command(bench, "scaling", "HighMMT epoch time vs number of tasks, sequence length and batch "
                                   "size on the speed workload: one JSON line per point, then scaling.json and one "
                                   "PNG per curve in --out")
    sp.add_argument("--out", help="output folder (default: runs/bench-scaling)")
    sp.add_argument("--curves", default="tasks,length,batch", help="comma-separated curves to measure "
                    "(default: tasks,length,batch)")
    sp.add_argument("--tasks", default="1,2,3,4", help="task counts of the tasks curve (default: 1,2,3,4)")
    sp.add_argument("--lengths", default="25,50,100,200,400", help="sequence lengths of the length curve "
                    "(default: 25,50,100,200,400)")
    sp.add_argument("--batches", default="8,16,32,64,128", help="batch sizes of the batch curve "
                    "(default: 8,16,32,64,128)")
    sp.add_argument("--batch", type=int, default=32, help="batch size of the tasks and length curves (default: 32)")
    sp.add_argument("--rows", type=int, default=512, help="rows per task in an epoch (default: 512)")
    sp.add_argument("--steps", type=int, default=2, help="steps per timed run (default: 2)")
    sp.add_argument("--repeats", type=int, default=3, help="timed runs per point; the median is used (default: 3)")
    sp.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    sp.add_argument("--reference", action="store_true", help="also time the original implementation at every "
                    "point (needs perceiver-multi-modality-pytorch; about 4x longer)")
    sp.set_defaults(func=cmd_bench_scaling)
    sp = command(bench, "gpu", "every GPU figure of docs/performance.md in one run: HighMMT against "
                               "the original code (fp32, bf16, compile), OmniVec2-base MFU, torchrun training on "
                               "the GPU")
    sp.add_argument("--out", default="runs/bench-gpu", help="where gpu.json and the training runs go "
                    "(default: runs/bench-gpu)")
    sp.add_argument("--doc", help="a markdown file whose gpu-figures markers get the tables (docs/performance.md)")
    sp.add_argument("--quick", action="store_true", help="fewer steps and one epoch: a smoke test, not figures")
    sp.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the script (default: cuda)")
    sp.add_argument("--timeout", type=int, default=900, help="seconds allowed to each measurement (default: 900)")
    sp.set_defaults(func=cmd_bench_gpu)
    sp = command(sub, "modalities", "each modality kind with its HighMMT standardizer and OmniVec2 tokenizer")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    command(sub, "datasets", "list data sources and whether their data is present")
    p.set_defaults(func=None)
    for name, fn in {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                     "suite": cmd_suite, "heterogeneity": cmd_heterogeneity, "ablations": cmd_study,
                     "pareto": cmd_study, "probe": cmd_probe, "pretrain": cmd_pretrain,
                     "transfer": cmd_transfer, "config": cmd_config, "variants": cmd_variants,
                     "modalities": cmd_modalities,
                     "datasets": cmd_datasets, "export": cmd_export, "bench": cmd_bench}.items():
        sub.choices[name].set_defaults(func=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    if not sys.stderr.isatty() and hasattr(args, "no_progress"):
        args.no_progress = True  # progress bars would flood a redirected log
    import highmodal.data  # noqa: F401  (registers the data sources)
    from highmodal.runtime import thread_count

    try:
        thread_count()  # a bad HIGHMODAL_THREADS is a clear error (the value itself is applied on import)
        args.func(args)
    except HighmodalError as e:
        if args.debug or os.environ.get("HIGHMODAL_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `highmodal evaluate RUN | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
