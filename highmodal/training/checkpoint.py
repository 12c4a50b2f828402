"""Run-directory I/O: weights as safetensors with a JSON sidecar; loading never unpickles."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from highmodal import __version__
from highmodal.errors import HighmodalError
from highmodal.fileio import atomic_write_text, refuse_to_replace, sha256_file
from highmodal.modalities.spec import ModalitySpec
from highmodal.models.base import MultitaskModel
from highmodal.models.registry import create_model
from highmodal.tasks import Task
from highmodal.training.weightfile import check_weights, read_weights

FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"}


def save_model(run_dir: Path, model: MultitaskModel, arch: str, preset: str, untrained: list[str] | None = None,
               state: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model.safetensors`` and ``model.json`` (architecture, specs, tasks, label maps, hash).
    ``untrained``: module prefixes left at their initialisation (``--init`` does not copy them).
    ``state``: the weights to write when not ``model.state_dict()`` (a sharded model's, gathered)."""
    weights = run_dir / "model.safetensors"
    tmp = weights.with_name(".model.safetensors.tmp")
    state = model.state_dict() if state is None else state
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    os.replace(tmp, weights)
    meta = {
        "format_version": FORMAT_VERSION,
        "highmodal_version": __version__,
        "arch": arch,
        "preset": preset,
        "config": model.arch_config(),
        "specs": [s.to_dict() for s in model.specs],
        "tasks": [t.to_dict() for t in model.tasks.values()],
        "params": sum(p.numel() for p in model.parameters()),
        "weights_sha256": sha256_file(weights),
    }
    if untrained:
        meta["untrained"] = untrained
    atomic_write_text(run_dir / "model.json", json.dumps(meta, indent=2))


def untrained_parts(run_dir: str | Path) -> list[str]:
    """The module prefixes a saved model never trained (a pretrained model's task heads)."""
    return json.loads((Path(run_dir) / "model.json").read_text()).get("untrained", [])


def load(run_dir: str | Path, device: str = "cpu", options: dict | None = None) -> MultitaskModel:
    """Restore a trained model from a run directory (safetensors + JSON only, no pickle).
    ``options`` replace architecture options that change no weight (OmniVec2's ``inference`` path)."""
    run_dir = Path(run_dir)
    meta_path, weights = run_dir / "model.json", run_dir / "model.safetensors"
    pickles = sorted(p.name for p in run_dir.glob("*") if p.suffix in PICKLE_SUFFIXES)
    if not weights.is_file() and pickles:
        raise HighmodalError(f"{run_dir / pickles[0]}: refusing a pickle file (unpickling can run arbitrary code); "
                             "highmodal loads weights only from model.safetensors + model.json")
    for p in (meta_path, weights):
        if not p.is_file():
            raise HighmodalError(f"{p}: not found; is {run_dir} a highmodal run directory?")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise HighmodalError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise HighmodalError(f"{meta_path}: model format {meta.get('format_version')!r} "
                             f"(written by highmodal {meta.get('highmodal_version')}) is not "
                             f"readable by highmodal {__version__}, which reads format {FORMAT_VERSION}")
    check_weights(weights)
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise HighmodalError(f"{weights}: sha256 does not match model.json; the weights are corrupt or were replaced")
    try:
        specs = [ModalitySpec.from_dict(s) for s in meta["specs"]]
        tasks = [Task.from_dict(t) for t in meta["tasks"]]
        config = meta["config"]
    except (KeyError, TypeError) as e:
        raise HighmodalError(f"{meta_path}: missing or malformed field {e}") from None
    unknown = sorted(set(options or {}) - set(config))
    if unknown:
        raise HighmodalError(f"{meta_path}: a {meta['arch']} model has no option {', '.join(unknown)}")
    try:
        model = create_model(meta["arch"], specs, tasks, preset=meta["preset"], **(config | (options or {})))
    except (KeyError, TypeError) as e:
        raise HighmodalError(f"{meta_path}: missing or malformed field {e}") from None
    state = read_weights(weights, device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise HighmodalError(f"{weights}: weights do not fit the architecture in model.json: "
                             f"{str(e).splitlines()[0]}") from None
    return model.to(device).eval()


class RunDir:
    """A run directory built in a hidden sibling (``.<name>.partial``) and moved into place only when
    complete, so a failed run never destroys an existing one (``--overwrite`` replaces it at the end).
    A partial run that reached a checkpoint is kept, so ``--resume`` can continue it."""

    def __init__(self, path: str | Path, overwrite: bool = False, resume: bool = False) -> None:
        self.final = Path(path)
        self.path = self.partial(self.final)
        if resume:
            if not self.resumable(self.path):
                raise HighmodalError(f"{self.final}: no interrupted run to resume ({self.path} has no checkpoint)")
            return
        refuse_to_replace(self.final, overwrite)
        if self.final.exists() and not self.final.is_dir():
            raise HighmodalError(f"{self.final}: exists and is not a directory")
        if self.path.exists() and not overwrite:
            raise HighmodalError(f"{self.path}: an interrupted run is there; pass --resume to continue it "
                                 "or --overwrite to start over")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()

    @staticmethod
    def resumable(path: Path) -> bool:
        """A checkpoint in ``path`` or in one of its folders (a pretraining run's stages)."""
        from highmodal.training.resume import checkpoint_dir

        return path.is_dir() and any(checkpoint_dir(d) is not None for d in [path, *path.iterdir()] if d.is_dir())

    @staticmethod
    def partial(final: Path) -> Path:
        """Where the run that will become ``final`` is built (and an interrupted one stays)."""
        return final.with_name(f".{final.name}.partial")

    @classmethod
    def interrupted_config(cls, final: Path) -> Path:
        """The ``config.yaml`` of the interrupted run that ``--resume final`` would continue."""
        config = cls.partial(final) / "config.yaml"
        if not config.is_file():
            raise HighmodalError(f"{final}: no interrupted run to resume (expected {cls.partial(final)})")
        return config

    def commit(self) -> Path:
        old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> bool:
        """Remove the partial run unless it holds a checkpoint; returns whether it was kept."""
        if self.resumable(self.path):
            return True
        shutil.rmtree(self.path, ignore_errors=True)
        return False
