"""highmodal: one model across many modalities and tasks (HighMMT, OmniVec2)."""

from highmodal.runtime import apply_defaults

__version__ = "0.1.0"
apply_defaults()  # before torch loads OpenMP: threads that fit the machine, a short spin (highmodal/runtime.py)


def load(run_dir, device: str = "cpu"):
    """Restore a trained model from a run directory, without pickle."""
    from highmodal.training.checkpoint import load as _load

    return _load(run_dir, device)


__all__ = ["__version__", "load"]
