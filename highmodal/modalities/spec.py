"""What a modality is: a name, a kind, a per-sample shape, and its positional-encoding settings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from highmodal.errors import HighmodalError

KINDS = (
    "image", "video", "audio", "text", "depth", "point_cloud", "time_series", "tabular", "graph",
    "xray", "infrared", "imu", "hyperspectral",
)


@dataclass(frozen=True)
class ModalitySpec:
    """One modality as the model sees it.

    ``shape`` is per sample, channels last: ``(*axes, channels)``. The leading axes are positions
    (time, height, width, feature index, ...) and get Fourier features; ``None`` marks a
    variable-length axis, which is padded in batches and comes with a boolean ``<name>_mask``.
    ``max_len`` is the reference length of a variable axis: positions are ``index / (max_len - 1)``
    mapped to [-1, 1], so a sample's encoding does not depend on how much padding its batch has.
    ``num_freq_bands``/``max_freq`` follow the HighMMT configs (6 bands, max_freq 1 for most inputs).
    ``vocab_size``: set for discrete token ids (one channel of integers in ``[0, vocab_size)``, id 0
    reserved for padding), e.g. subword text for OmniVec2's embedding tokenizer; None for real values.
    """

    name: str
    kind: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    num_freq_bands: int = 6
    max_freq: float = 1.0
    max_len: int | None = None
    vocab_size: int | None = None
    mean: tuple[float, ...] | None = field(default=None, compare=False)
    std: tuple[float, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = f"modality {self.name!r}"
        if self.kind not in KINDS:
            raise HighmodalError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if len(self.shape) < 2:
            raise HighmodalError(
                f"{where}: shape {self.shape} needs at least one position axis and a channel axis, "
                "e.g. (length, channels)"
            )
        if self.shape[-1] is None or any(s is not None and s < 1 for s in self.shape):
            raise HighmodalError(f"{where}: shape {self.shape} must have positive sizes and a fixed channel axis")
        if any(s is None for s in self.shape) and not self.max_len:
            raise HighmodalError(f"{where}: a variable-length axis needs max_len")
        for stat in (self.mean, self.std):
            if stat is not None and len(stat) not in (self.channels, math.prod(self.ref_lengths()) * self.channels):
                raise HighmodalError(f"{where}: normalisation statistics have {len(stat)} values; expected "
                                     f"{self.channels} (per channel) or one per element")
        if self.vocab_size is not None and (self.vocab_size < 2 or self.channels != 1):
            raise HighmodalError(f"{where}: token ids need vocab_size >= 2 and one channel, got vocab_size "
                                 f"{self.vocab_size} and shape {self.shape}")
        if self.num_freq_bands < 1 or self.max_freq <= 0:
            raise HighmodalError(f"{where}: num_freq_bands must be >= 1 and max_freq > 0")

    @property
    def channels(self) -> int:
        return int(self.shape[-1])  # type: ignore[arg-type]

    @property
    def axes(self) -> tuple[int | None, ...]:
        return self.shape[:-1]

    @property
    def variable(self) -> bool:
        return any(s is None for s in self.axes)

    @property
    def pos_dim(self) -> int:
        """Fourier feature size: per axis sin+cos per band plus the raw position (perceiver-pytorch)."""
        return len(self.axes) * (2 * self.num_freq_bands + 1)

    def ref_lengths(self) -> tuple[int, ...]:
        return tuple(int(s) if s is not None else int(self.max_len) for s in self.axes)  # type: ignore[arg-type]

    def num_positions(self) -> int:
        return math.prod(self.ref_lengths())

    def validate(self, x: np.ndarray, source: str) -> None:
        """Raise a HighmodalError naming the source, modality, expected and actual shape/dtype."""
        expected = "(N, " + ", ".join("*" if s is None else str(s) for s in self.shape) + ")"
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise HighmodalError(
                f"{source}: modality {self.name!r} must be numeric ({self.dtype}), got dtype {x.dtype}"
            )
        if x.ndim != len(self.shape) + 1 or any(
            s is not None and a != s for a, s in zip(x.shape[1:], self.shape, strict=True)
        ):
            raise HighmodalError(
                f"{source}: modality {self.name!r} expected shape {expected}, got {tuple(x.shape)}"
            )
        if not np.all(np.isfinite(x)):
            raise HighmodalError(f"{source}: modality {self.name!r} contains NaN or inf values")
        if self.vocab_size is not None and (np.any(x != np.round(x)) or x.min(initial=0) < 0
                                            or x.max(initial=0) >= self.vocab_size):
            raise HighmodalError(f"{source}: modality {self.name!r} holds token ids, expected integers in "
                                 f"[0, {self.vocab_size})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        for k in ("mean", "std"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModalitySpec:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        for k in ("mean", "std"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)
