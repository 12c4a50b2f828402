"""``highmodal bench speed``: training and inference throughput of our model and of the original
implementation on the same workload, timed in one process, so their ratio is apples to apples; for a
model with no original code (OmniVec2), its tokens per second and model FLOPs utilisation instead.

Inputs are synthetic (seeded Gaussian data, uniform labels) of the workload's exact per-sample
shapes: the step cost of these models depends on shapes alone, not on values, so no dataset is
needed. One train step is the original training loop's: one batch of every task, the weighted sum
of their cross-entropies, one backward, one Adam step; samples counted = batch × number of tasks.
A pairwise workload (OmniVec2, §3.2) feeds its two tasks' batches through the fused two-stream
graph instead. An inference step runs every task's batch under ``torch.inference_mode`` (for
OmniVec2 single-stream, the paper's inference path).

Model FLOPs per step are counted once, on an eager copy (``bench/flops.py``); achieved TFLOP/s and,
where the device's peak is known, MFU follow from the timed rates.

Timing: ``warmup`` untimed steps first (two at least), then ``repeats`` timed runs of ``steps``
steps each, with ``time.perf_counter`` (after a CUDA synchronise on GPU); the median run is
reported. Runs alternate between the two models, so a machine whose load drifts slows both alike.
Threads are torch's default unless ``threads`` is given.

Peak memory is what building and stepping a model adds (parameters, gradients, Adam state,
activations; not the inputs). On CUDA: ``max_memory_allocated`` minus what was allocated before
the model was built. On CPU torch's allocator keeps no statistics and ``tracemalloc`` cannot see
tensor storage, so each model is built and stepped again in a fresh spawned process, and the
growth of that process's peak resident set is reported (``cpu_peak``). The two are not comparable.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from importlib import metadata

import torch
import torch.nn.functional as F
from torch import nn

from highmodal import __version__
from highmodal.bench import flops
from highmodal.config import AMP, TrainConfig
from highmodal.errors import HighmodalError, did_you_mean
from highmodal.modalities.samples import random_values
from highmodal.modalities.spec import ModalitySpec
from highmodal.models.base import MultitaskModel, Piece, piece_loss
from highmodal.models.highmmt import resolve_config
from highmodal.models.registry import MODELS, create_model
from highmodal.registry import Registry
from highmodal.tasks import Task
from highmodal.training import engines
from highmodal.training.engines import ENGINES
from highmodal.training.precision import autocast
from highmodal.training.trainer import Trainer

try:
    import resource
except ImportError:  # Windows: no getrusage, so no CPU peak memory
    resource = None

REFERENCE_PACKAGE = "perceiver-multi-modality-pytorch"
INSTALL_HINT = ("pip install --no-deps 'perceiver-multi-modality-pytorch==1.4.0' einops (--no-deps: it pins "
                "torch<2.0 and einops<0.4, which would downgrade torch; it runs on current torch)")
IMPLS = ("highmodal", "reference")


@dataclass(frozen=True)
class Workload:
    """A model setting with the inputs and tasks it runs on: all both implementations need."""

    model: str
    preset: str
    specs: tuple[ModalitySpec, ...]
    tasks: tuple[Task, ...]
    lr: float
    weight_decay: float
    # Goals in ``target_setting``: speed-ups ours/reference ("train", "infer") or utilisation ("mfu").
    targets: dict[str, float]
    target_setting: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    original_params: int | None = None  # None: no original implementation to compare with
    param_tolerance: float = 0.0  # relative difference allowed from ``original_params``
    pairwise: bool = False  # train steps fuse the two tasks' single-modality batches (OmniVec2 §3.2)
    tokens: bool = False  # report tokens/s: the model has ``tokenize(batch, modality)``

    @property
    def impls(self) -> tuple[str, ...]:
        return IMPLS if self.original_params is not None else IMPLS[:1]

    def __post_init__(self) -> None:
        if self.pairwise and (len(self.tasks) != 2 or any(len(t.modalities) != 1 for t in self.tasks)):
            raise ValueError("a pairwise workload has two tasks of one modality each")


WORKLOADS: Registry[Workload] = Registry("speed workload")


def _sequence(name: str, kind: str, length: int, channels: int) -> ModalitySpec:
    return ModalitySpec(name, kind, (length, channels), num_freq_bands=3)


# HighMMT's large multitask setting (paper Table 10: MIMIC, AV-MNIST, MOSEI, UR-FUNNY) as the original
# code runs it: pliang279/HighMMT, private_test_scripts/perceivers/fourmultitask.py.
WORKLOADS.register("highmmt-4task")(Workload(
    model="highmmt",
    preset="large",
    specs=(
        ModalitySpec("static", "tabular", (5, 1)),
        ModalitySpec("timeseries", "time_series", (24, 12, 1)),
        ModalitySpec("image", "image", (7, 7, 16)),  # 28×28 digits cut into 4×4 patches
        ModalitySpec("audio", "audio", (7, 7, 256)),  # 112×112 spectrograms cut into 16×16 patches
        _sequence("feature1", "video", 50, 35),  # MOSEI
        _sequence("feature2", "audio", 50, 74),  # MOSEI
        _sequence("feature3", "text", 50, 300),  # GloVe words, one modality for MOSEI and UR-FUNNY
        _sequence("feature4", "video", 50, 371),  # UR-FUNNY
        _sequence("feature5", "audio", 50, 81),  # UR-FUNNY
    ),
    tasks=(  # loss weights: fourmultitask.py's train_weights
        Task("mimic", ("static", "timeseries"), "classification", 2, weight=1.2),
        Task("avmnist", ("image", "audio"), "classification", 10, weight=0.9),
        Task("mosei", ("feature1", "feature2", "feature3"), "classification", 2, weight=1.1),
        Task("urfunny", ("feature4", "feature5", "feature3"), "classification", 2, weight=1.0),
    ),
    original_params=527_382,
    param_tolerance=0.03,  # "within a few percent"; ours and the reference currently match exactly
    lr=8e-4,
    weight_decay=1e-3,
    targets={"train": 3.0, "infer": 5.0},
    target_setting={"device": "cpu", "threads": 2, "amp": None, "compile": False},
))

# OmniVec2's supervised step (§3.2): a pair of modalities, one task each, through the two-stream
# graph, at the base preset (f BERT-base sized). The pair is the paper's pretraining pair ImageNet1K
# image + English text: 224-pixel images cut into ViT-B/16's 196 patches with ImageNet's 1000
# classes, and 128 BERT subword ids (BERT's 30,522-entry vocabulary) of a two-class sentence task.
# The paper gives no optimiser settings; ViT's lr and weight decay are taken (they do not change a
# step's cost). There is no original code to compare with.
WORKLOADS.register("omnivec2-pair")(Workload(
    model="omnivec2",
    preset="base",
    specs=(ModalitySpec("image", "image", (224, 224, 3)), ModalitySpec("text", "text", (128, 1), vocab_size=30_522)),
    tasks=(Task("imagenet", ("image",), "classification", 1000), Task("sentences", ("text",), "classification", 2)),
    lr=1e-4,
    weight_decay=0.05,
    targets={"mfu": 0.40},
    target_setting={"device": "cuda", "amp": "bf16", "preset": "base"},
    overrides={"tokenizers": {"image": {"patch": 16}}},
    pairwise=True,
    tokens=True,
))


def get_workload(name: str) -> Workload:
    return WORKLOADS.get(name)


def default_workload(model: str) -> str:
    """The first workload registered for ``model``."""
    MODELS.get(model)  # an unknown model name is a clear error with suggestions
    for name, workload in WORKLOADS.items():
        if workload.model == model:
            return name
    raise HighmodalError(f"--model {model!r} has no speed workload; workloads: "
                         + ", ".join(f"{n} ({w.model})" for n, w in WORKLOADS.items()))


def synthetic_batches(workload: Workload, batch: int, device: torch.device, seed: int = 0
                      ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """One batch per task (its own tensors, also for a modality two tasks share) and its labels."""
    g = torch.Generator().manual_seed(seed)
    specs = {s.name: s for s in workload.specs}
    batches = {t.name: {m: random_values(specs[m], batch, g).to(device) for m in t.modalities}
               for t in workload.tasks}
    targets = {t.name: torch.randint(t.out_dim, (batch,), generator=g).to(device) for t in workload.tasks}
    return batches, targets


def reference_class() -> type[nn.Module]:
    try:
        from highmodal.bench.reference import ReferenceHighMMT
    except ImportError as e:
        raise HighmodalError(f"the reference implementation needs {REFERENCE_PACKAGE} ({e}): {INSTALL_HINT}") from None
    return ReferenceHighMMT


def build_model(impl: str, workload: Workload, seed: int = 0) -> nn.Module:
    """Our registered model or the reference, both from the workload's preset and overrides."""
    torch.manual_seed(seed)
    if impl == "highmodal":
        return create_model(workload.model, workload.specs, workload.tasks, preset=workload.preset,
                            **workload.overrides)
    cfg = resolve_config(workload.preset, **workload.overrides)
    return reference_class()(workload.specs, workload.tasks, cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Runner:
    """One implementation under test: its model, its training step and numeric settings. Ours trains
    through the ``Trainer``'s own step (losses by task, balancing, clipping, the non-finite watch,
    the fused AdamW, bf16 and ``torch.compile`` as configured); the reference through a plain one."""

    model: nn.Module
    workload: Workload
    device: torch.device
    amp: str | None = None
    trainer: Trainer | None = None
    optimizer: torch.optim.Optimizer | None = None

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.amp)

    def pieces(self, batches: dict[str, dict[str, torch.Tensor]], train: bool) -> list[Piece]:
        """One piece per task; a pairwise workload trains on one modality piece per task, which the
        model fuses."""
        pairwise = train and self.workload.pairwise
        return [Piece(t.name, t.modalities[0] if pairwise else None, batches[t.name]) for t in self.workload.tasks]

    def outputs(self, batches: dict[str, dict[str, torch.Tensor]], train: bool
                ) -> list[torch.Tensor | tuple[torch.Tensor, ...]]:
        """Logits of every task; through ``step_outputs`` for our models, as the trainer calls them."""
        pieces = self.pieces(batches, train)
        if isinstance(self.model, MultitaskModel):
            return self.model.step_outputs(pieces)
        return [self.model(p.batch, p.task) for p in pieces]

    def train_step(self, batches: dict[str, dict[str, torch.Tensor]], targets: dict[str, torch.Tensor]) -> None:
        self.model.train()
        if self.trainer is not None:
            self.trainer.step([replace(p, batch=p.batch | {"target": targets[p.task]})
                               for p in self.pieces(batches, train=True)])
            return
        self.optimizer.zero_grad(set_to_none=True)
        outs = self.outputs(batches, train=True)
        loss = sum(t.weight * piece_loss(F.cross_entropy, out, targets[t.name])
                   for t, out in zip(self.workload.tasks, outs, strict=True))
        loss.backward()
        self.optimizer.step()

    def infer_step(self, batches: dict[str, dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            return self.outputs(batches, train=False)


@dataclass
class _Steps:
    """What the Trainer needs of a sampler when the bench hands it each step itself."""

    weights: dict[str, float]

    def __len__(self) -> int:
        return 1


def make_runner(impl: str, workload: Workload, device: torch.device, amp: str | None = None, compile: bool = False,
                seed: int = 0) -> Runner:
    """AMP, ``torch.compile`` and the Trainer are ours alone: the reference runs as the original did
    (fp32, eager, the default Adam). Our learning rate is held at the workload's (no schedule)."""
    model = build_model(impl, workload, seed).to(device)
    if impl != "highmodal":
        return Runner(model, workload, device, optimizer=torch.optim.Adam(
            model.parameters(), lr=workload.lr, weight_decay=workload.weight_decay))
    cfg = TrainConfig(epochs=1, lr=workload.lr, weight_decay=workload.weight_decay, warmup_frac=0.0, min_lr_ratio=1.0,
                      device=str(device), amp=amp, compile=compile, memory_guard=False)
    steps = _Steps({t.name: t.weight for t in workload.tasks})
    trainer = Trainer(model, None, cfg, seed, progress=False, sampler=steps)
    return Runner(model, workload, device, amp, trainer=trainer)


def tokens_per_step(model: nn.Module, workload: Workload, batches: dict[str, dict[str, torch.Tensor]]) -> int:
    """Tokens the shared transformer reads in one step: every task's tokenizer output, real ones only."""
    total = 0
    with torch.inference_mode():
        for t in workload.tasks:
            for m in t.modalities:
                tokens, mask = model.tokenize(batches[t.name], m)
                total += int(mask.sum()) if mask is not None else tokens.shape[0] * tokens.shape[1]
    return total


@dataclass(frozen=True)
class Settings:
    """One benchmark run's options (the CLI flags); picklable, for the memory-measuring processes."""

    model: str = "highmmt"
    workload: str | None = None  # None: the model's first workload
    preset: str | None = None  # None: the workload's
    device: str = "cpu"
    amp: str | None = None
    compile: bool = False
    batch: int = 32
    steps: int = 10
    warmup: int = 3
    repeats: int = 5
    threads: int | None = None
    memory: bool = True
    peak_tflops: float | None = None
    seed: int = 0
    runtimes: tuple[str, ...] = ()  # inference engines (training/engines.py) measured beside the others

    @property
    def warm_steps(self) -> int:
        return max(self.warmup, 2)  # two at least: Adam allocates its state in the first step

    def check(self) -> tuple[Workload, torch.device]:
        """Validate every option before anything is built; user errors are HighmodalErrors."""
        name = self.workload or default_workload(self.model)
        workload = get_workload(name)
        MODELS.get(self.model)  # an unknown model name is a clear error with suggestions
        if self.model != workload.model:
            raise HighmodalError(f"--model {self.model!r}: workload {name!r} is defined for "
                                 f"{workload.model!r}; workloads: {', '.join(WORKLOADS)}")
        if self.amp is not None and self.amp not in AMP:
            raise HighmodalError(f"--amp {self.amp!r}: choose one of {', '.join(AMP)}{did_you_mean(self.amp, AMP)}")
        counts = {"batch": self.batch, "steps": self.steps, "warmup": self.warmup, "repeats": self.repeats,
                  "threads": 1 if self.threads is None else self.threads}
        for key, value in counts.items():
            if value < 1:
                raise HighmodalError(f"--{key} must be at least 1, got {value}")
        if self.runtimes and (self.amp or self.compile):
            raise HighmodalError("--runtimes measures each engine beside the fp32 eager model; drop --amp/--compile "
                                 "(--runtimes bf16,compile measure those paths)")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise HighmodalError(f"--peak-tflops must be positive, got {self.peak_tflops}")
        if self.preset not in (None, workload.preset):
            if workload.original_params is not None:
                raise HighmodalError(f"--preset {self.preset!r}: workload {name!r} compares with the original "
                                     f"code in its setting, preset {workload.preset!r}")
            workload = replace(workload, preset=self.preset)
        with torch.device("meta"):  # an unknown preset fails here, before anything is measured
            build_model("highmodal", workload)
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise HighmodalError(f"--device {self.device!r} is not a device; use cpu or cuda") from None
        if device.type not in ("cpu", "cuda"):
            raise HighmodalError(f"--device {self.device!r} is not supported; use cpu or cuda")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise HighmodalError(f"--device {self.device}: torch sees no CUDA device here")
        for name in self.runtimes:
            why = ENGINES.get(name).missing(device.type)  # an unknown name: a clear error with suggestions
            if why:
                raise HighmodalError(f"--runtimes {name}: {why}")
        return workload, device


class StepGraph(nn.Module):
    """The inference step as a graph of positional tensors (every task's inputs in order), returning
    every task's logits: what an inference engine (``training/engines.py``) takes."""

    def __init__(self, runner: Runner, batches: dict[str, dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.model, self.runner = runner.model, runner  # the model as a submodule: its parameters count
        self.keys = [(task, key) for task, batch in batches.items() for key in batch]

    def inputs(self, batches: dict[str, dict[str, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        return tuple(batches[task][key] for task, key in self.keys)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batches: dict[str, dict[str, torch.Tensor]] = {}
        for (task, key), x in zip(self.keys, xs, strict=True):
            batches.setdefault(task, {})[key] = x
        return tuple(self.runner.outputs(batches, train=False))


def engine_steps(settings: Settings, workload: Workload, device: torch.device, batches: dict
                 ) -> dict[str, tuple[Callable[[], object], float, float]]:
    """Each of ``settings.runtimes`` on a fresh fp32 eager copy of our model (same seed, so the same
    weights): its step, its scaled max |difference| from eager fp32 and its tolerance."""
    runner = make_runner("highmodal", workload, device, None, False, settings.seed)
    graph = StepGraph(runner, batches).eval()
    xs = graph.inputs(batches)
    names = [f"{t}.{k}" for t, k in graph.keys]
    outputs = [f"{t.name}.logits" for t in workload.tasks]
    out = {}
    for name in settings.runtimes:
        run, diff = engines.checked(name, graph, xs, names, outputs)
        out[name] = ((lambda run=run: run(*xs)), diff, ENGINES.get(name).tolerance)
    return out


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def _peak_tracker() -> tuple[Callable[[], int | None], str]:
    """A function returning the peak RSS growth since this call, and the method's name. Linux can
    reset the peak (VmHWM) to the current RSS, so import-time spikes do not hide the model's; else
    fall back on ``ru_maxrss``, which counts growth above the earlier peak only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_bytes("VmRSS")
        return (lambda: _status_bytes("VmHWM") - base), "VmHWM growth after a peak reset, in a fresh process"
    except OSError:
        if resource is None:
            return (lambda: None), "unavailable on this platform"
        scale = 1 if sys.platform == "darwin" else 1024
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * scale,
                "ru_maxrss growth, in a fresh process")


def cpu_peak(settings: Settings, impl: str, threads: int) -> tuple[int | None, str]:
    """How much one model adds to the peak RSS while built and stepped; meant for a fresh process.

    A first copy, stepped once on one sample and kept alive, loads what torch initialises lazily
    (kernels, the autograd engine, optimiser code: ~150 MB, more than the model needs), so that is
    not counted; and since it stays alive, its memory cannot be recycled into the measured copy's."""
    torch.set_num_threads(threads)
    workload, device = settings.check()
    warm = make_runner(impl, workload, device, settings.amp, settings.compile, settings.seed)
    one, one_target = synthetic_batches(workload, 1, device, settings.seed)
    warm.train_step(one, one_target)
    warm.infer_step(one)
    batches, targets = synthetic_batches(workload, settings.batch, device, settings.seed)
    growth, method = _peak_tracker()
    runner = make_runner(impl, workload, device, settings.amp, settings.compile, settings.seed)
    for _ in range(settings.warm_steps):
        runner.train_step(batches, targets)
        runner.infer_step(batches)
    return growth(), method


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _rate(step: Callable[[], object], steps: int, samples: int, device: torch.device) -> float:
    start = _clock(device)
    for _ in range(steps):
        step()
    return steps * samples / (_clock(device) - start)


def _step_flops(settings: Settings, impl: str, workload: Workload, device: torch.device, batches: dict,
                targets: dict) -> dict[str, int]:
    """Model FLOPs of one train and one inference step, counted on an eager copy built for it. The
    inference step is counted with autograd on (same products): under ``inference_mode`` torch's
    counter fails on modules given a parameter as input (the latents)."""
    runner = make_runner(impl, workload, device, settings.amp, False, settings.seed)

    def infer() -> None:
        runner.model.eval()
        with runner.autocast():
            runner.outputs(batches, train=False)

    return {"train": flops.count_flops(lambda: runner.train_step(batches, targets)), "infer": flops.count_flops(infer)}


def _warm_up(settings: Settings, impl: str, workload: Workload, device: torch.device, batches: dict,
             targets: dict) -> tuple[Runner, int | None]:
    """Build and warm up one implementation; on CUDA also return the memory it added at its peak."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    runner = make_runner(impl, workload, device, settings.amp, settings.compile, settings.seed)
    for _ in range(settings.warm_steps):
        runner.train_step(batches, targets)
        runner.infer_step(batches)
    if not (cuda and settings.memory):
        return runner, None
    torch.cuda.synchronize(device)
    return runner, torch.cuda.max_memory_allocated(device) - base


def _check_equal(workload: Workload, runners: dict[str, Runner], batches: dict, batch: int,
                 params: dict[str, int]) -> dict[str, list[int]]:
    """Every model must map every task's batch to (batch, classes) logits and have the original's size."""
    shapes = {impl: [tuple(o.shape) for o in r.infer_step(batches)] for impl, r in runners.items()}
    want = [(batch, t.out_dim) for t in workload.tasks]
    if any(s != want for s in shapes.values()):
        raise RuntimeError(f"output shapes differ: expected {want}, got {shapes}")
    original = workload.original_params
    for impl, n in params.items():
        if original is not None and abs(n - original) > workload.param_tolerance * original:
            raise RuntimeError(f"{impl} has {n:,} parameters; the original has {original:,} "
                               f"(tolerance {workload.param_tolerance:.0%})")
    return {t.name: list(s) for t, s in zip(workload.tasks, want, strict=True)}


def runtimes_from_flag(flag: str | None, device: str, amp: str | None, compile: bool) -> tuple[str, ...]:
    """``--runtimes``: a comma-separated list, ``none``, or ``auto`` (the default): the engines that
    ``predict --runtime auto`` chooses among and that can run on ``device``, so the plain command
    reports the best inference path beside eager. ``auto`` measures none with ``--amp``/``--compile``,
    which time our model in that setting instead."""
    from highmodal.training.predict import AUTO_SKIPS

    flag = flag or "auto"
    if flag == "none":
        return ()
    if flag != "auto":
        return tuple(flag.split(","))
    if amp or compile:
        return ()
    try:
        kind = torch.device(device).type
    except RuntimeError:
        return ()  # the settings check names the bad device
    return tuple(n for n, e in ENGINES.items() if n != "eager" and n not in AUTO_SKIPS and e.missing(kind) is None)


def run_speed(**options) -> list[dict]:
    """One result per implementation, then their ratios (ours / reference samples per second), or
    for a workload with no original code our utilisation. ``options``: the fields of ``Settings``;
    ``threads`` None keeps torch's default."""
    settings = Settings(**options)
    workload, device = settings.check()
    if workload.original_params is not None:
        reference_class()  # fail before any measuring when the reference is not installed
    before = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _measure(settings, workload, device)
    finally:
        torch.set_num_threads(before)


def _measure(settings: Settings, workload: Workload, device: torch.device) -> list[dict]:
    threads = torch.get_num_threads()
    batches, targets = synthetic_batches(workload, settings.batch, device, settings.seed)
    counted = {impl: _step_flops(settings, impl, workload, device, batches, targets) for impl in workload.impls}
    runners: dict[str, Runner] = {}
    peak: dict[str, int | None] = {}
    method = "torch.cuda.max_memory_allocated growth while built and warmed up" if settings.memory else None
    with ExitStack() as stack:
        pending = {}
        if device.type == "cpu" and settings.memory:  # a fresh process per model, run while this one warms up
            for impl in workload.impls:
                pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
                pending[impl] = pool.submit(cpu_peak, settings, impl, threads)
        for impl in workload.impls:
            runners[impl], peak[impl] = _warm_up(settings, impl, workload, device, batches, targets)
        for impl, future in pending.items():
            peak[impl], method = future.result()
    params = {impl: count_params(r.model) for impl, r in runners.items()}
    shapes = _check_equal(workload, runners, batches, settings.batch, params)

    samples, steps = settings.batch * len(workload.tasks), settings.steps
    train: dict[str, list[float]] = {impl: [] for impl in runners}
    infer: dict[str, list[float]] = {impl: [] for impl in runners}
    engine = engine_steps(settings, workload, device, batches)
    for step, _, _ in engine.values():  # the models warmed up above; a compiled graph compiles on its first call
        for _ in range(settings.warm_steps):
            step()
    infer_steps = {impl: (lambda r=r: r.infer_step(batches)) for impl, r in runners.items()}
    infer_steps |= {f"runtime:{name}": step for name, (step, _, _) in engine.items()}
    infer |= {key: [] for key in infer_steps if key not in infer}
    for _ in range(settings.repeats):
        for impl, r in runners.items():
            train[impl].append(_rate(lambda r=r: r.train_step(batches, targets), steps, samples, device))
    for _ in range(settings.repeats):
        for key, step in infer_steps.items():
            infer[key].append(_rate(step, steps, samples, device))

    tokens = tokens_per_step(runners["highmodal"].model, workload, batches) if workload.tokens else None
    setting = {"device": device.type, "threads": threads, "amp": settings.amp, "compile": settings.compile,
               "preset": workload.preset}
    common = {"model": settings.model, "workload": settings.workload or default_workload(settings.model)}
    lines = []
    matmul: dict[str, float] = {}  # the reference matmul rate per dtype, measured once
    for impl, r in runners.items():
        rates = {k: statistics.median(runs[impl]) for k, runs in (("train", train), ("infer", infer))}
        lines.append({
            **common, "impl": impl, "package": _package(impl), "device": str(device), "threads": threads,
            "preset": workload.preset, "batch": settings.batch, "amp": r.amp,
            "compile": settings.compile and impl == "highmodal",
            "train_samples_per_s": rates["train"], "infer_samples_per_s": rates["infer"],
            **({f"{k}_tokens_per_s": tokens * rate / samples for k, rate in rates.items()} if tokens else {}),
            "peak_mem_bytes": peak[impl], "peak_mem_method": method, "params": params[impl],
            **_utilisation(settings, device, r.amp, counted[impl], {k: v / samples for k, v in rates.items()},
                           matmul),
            "steps": steps, "warmup": settings.warm_steps, "train_runs": train[impl], "infer_runs": infer[impl],
        })
    reference_infer = statistics.median(infer["reference"]) if "reference" in infer else None
    for name, (_, diff, tolerance) in engine.items():
        rate = statistics.median(infer[f"runtime:{name}"])
        lines.append({
            **common, "impl": "highmodal", "runtime": name, "description": ENGINES.get(name).description,
            "device": str(device), "threads": threads, "preset": workload.preset, "batch": settings.batch,
            "infer_samples_per_s": rate, "max_rel_diff": diff, "tolerance": tolerance,
            "infer_ratio": rate / reference_infer if reference_infer else None, "infer_runs": infer[f"runtime:{name}"],
        })
    if workload.original_params is None:
        ours = lines[0]
        mfu = {"train": ours["train_mfu"], "infer": ours["infer_mfu"]}
        summary = {**common, "utilisation": "model FLOPs / step time / device peak", "mfu": mfu["train"],
                   "infer_mfu": mfu["infer"], "tokens_per_step": tokens,
                   **{k: ours[k] for k in ("train_tokens_per_s", "train_tflops_per_s", "peak_tflops",
                                           "matmul_tflops", "train_matmul_fraction") if k in ours}}
        verdict = {k: mfu["train"] for k in workload.targets}
    else:
        ratio = {k: lines[0][f"{k}_samples_per_s"] / lines[1][f"{k}_samples_per_s"] for k in ("train", "infer")}
        best = max([("eager", ratio["infer"])] + [(ln["runtime"], ln["infer_ratio"]) for ln in lines[2:]],
                   key=lambda kv: kv[1])
        if engine:
            ratio["infer"] = best[1]
        summary = {**common, "ratio": "highmodal / reference samples per second", "train_ratio": ratio["train"],
                   "infer_ratio": ratio["infer"], **({"infer_runtime": best[0]} if engine else {}),
                   "params": {"highmodal": params["highmodal"], "reference": params["reference"],
                              "original": workload.original_params}}
        verdict = ratio
    matches = all(setting[k] == v for k, v in workload.target_setting.items())
    lines.append({
        **summary, **setting, "batch": settings.batch, "output_shapes": shapes, "targets": workload.targets,
        "target_setting": workload.target_setting,
        "meets_targets": (all(verdict[k] is not None and verdict[k] >= v for k, v in workload.targets.items())
                          if matches else None),
    })
    return lines


def _utilisation(settings: Settings, device: torch.device, amp: str | None, counted: dict[str, int],
                 steps_per_s: dict[str, float], matmul: dict[str, float]) -> dict:
    """Model FLOPs per step, achieved TFLOP/s, and their fraction of the device's peak (MFU) and of
    the rate a large matmul attains here, all in the dtype the model computes in. ``matmul`` caches
    that rate per dtype, so models computing in the same dtype share one measurement."""
    dtype = flops.matmul_dtype(device, amp)
    given = settings.peak_tflops and dtype == flops.matmul_dtype(device, settings.amp)  # it is our dtype's peak
    peak, source = (settings.peak_tflops, "--peak-tflops") if given else flops.datasheet_peak(device, dtype)
    if dtype not in matmul:
        matmul[dtype] = flops.matmul_tflops(device, dtype)
    rate = matmul[dtype]
    out: dict = {"flops_dtype": dtype, "peak_tflops": peak, "peak_tflops_source": source, "matmul_tflops": rate}
    for k, n in counted.items():
        achieved = n * steps_per_s[k] / 1e12
        out |= {f"{k}_flops_per_step": n, f"{k}_tflops_per_s": achieved,
                f"{k}_mfu": achieved / peak if peak else None, f"{k}_matmul_fraction": achieved / rate}
    return out


def _package(impl: str) -> str:
    if impl == "highmodal":
        return f"highmodal=={__version__}"
    return f"{REFERENCE_PACKAGE}=={metadata.version(REFERENCE_PACKAGE)}"
