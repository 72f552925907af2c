"""The one interface every model plugin implements: :class:`Detector`.

A detector declares its label space, its capabilities and its own input policy (the
preprocessing of its official test code). The harness hands it RGB uint8 images; it returns
:class:`~bench.types.Prediction` objects with probabilities in the standard label order.
Method quirks (index 1 = forged, 0 = fake, ...) are converted inside the plugin.

Subclasses implement :meth:`build`, :meth:`load_weights`, :meth:`preprocess` and
:meth:`forward`; the base class does batching, device placement, ``torch.inference_mode``
and the bilinear resize of predicted masks (and confidence maps) to each image's size. Models with inputs that are
not one tensor (e.g. SIDA) override :meth:`predict_preprocessed` instead of :meth:`forward`.
"""

from __future__ import annotations

import abc
import difflib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import UserError
from bench.registry import UnknownNameError
from bench.types import LabelSpace, Prediction


class Capability(str, Enum):
    DETECT = "detect"
    LOCALIZE = "localize"
    EXPLAIN = "explain"


@dataclass(frozen=True)
class InputPolicy:
    """How a model wants its input, recorded verbatim in every results file.

    Attributes:
        resize: None (no resize), an int (shorter side, or square when ``resize_mode`` is
            ``"square"``) in pixels.
        resize_mode: ``"shorter_side"``, ``"square"`` or ``"longest_side"``.
        crop: None (no crop) or the side of a square crop.
        crop_mode: ``"center"``.
        mean, std: per-channel normalisation on the [0, 1] scale (None = no normalisation).
        scale: the divisor that maps uint8 to the model's range (255.0 usually).
        colour_order: ``"RGB"`` or ``"BGR"``.
        interpolation: resize interpolation (``"bilinear"``, ``"bicubic"``, ...).
        notes: anything else that a reader needs (e.g. "odd sizes cropped to even").
    """

    resize: int | None = None
    resize_mode: str = "shorter_side"
    crop: int | None = None
    crop_mode: str = "center"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    scale: float = 255.0
    colour_order: str = "RGB"
    interpolation: str = "bilinear"
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DetectorOutput:
    """What :meth:`Detector.forward` returns for a batch of B same-shaped inputs.

    Attributes:
        probs: (B, K) class probabilities in the standard label order.
        mask: optional (B, h, w) forgery probabilities in [0, 1] at any resolution; the base
            class resizes each to its image's size bilinearly.
        logits: optional (B, L) raw outputs the probabilities come from (see ``Prediction.logits``).
        confidence: optional (B, h, w) reliability of ``mask`` in [0, 1] (see
            ``Prediction.confidence``), at the mask's resolution; resized exactly as the mask.
    """

    probs: torch.Tensor
    mask: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    confidence: torch.Tensor | None = None


@dataclass
class TrainOptions:
    """Options of ``sida-bench train``; a plugin fills unset values from its own recipe."""

    out_dir: Path
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    resume: bool = False
    workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def parse_model_name(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:CONFIG]`` into (name, config or None)."""
    name, sep, config = spec.partition(":")
    if not name or (sep and not config):
        raise UserError(f"Model must be given as NAME[:CONFIG], got {spec!r}")
    return name, (config or None)


_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file; of a directory, sha256 over the lines ``"<relative path>\\0<file sha256>\\n"`` of
    its files sorted by relative path. Each file is read once per process while its (path, size,
    mtime, inode) is unchanged, so a plugin that hashes its CLIP file and then the whole folder
    reads the multi-GB file once."""
    path = Path(path)
    if not path.is_dir():
        return _single_file_sha256(path, chunk)
    digest = hashlib.sha256()
    for f in sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()):
        rel = f.relative_to(path).as_posix().encode("utf-8", "surrogateescape")
        digest.update(rel + b"\0" + _single_file_sha256(f, chunk).encode() + b"\n")
    return digest.hexdigest()


def _single_file_sha256(path: Path, chunk: int) -> str:
    info = path.stat()
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


class Detector(abc.ABC):
    """Base class of every model plugin (detector, localizer, or both).

    Class attributes a plugin sets:
        name: the registry name (``"cnnspot"``).
        label_space: default label space of its probabilities (an instance may change it,
            e.g. ``num_classes=3`` for a retrained baseline).
        capabilities: a subset of ``{DETECT, LOCALIZE, EXPLAIN}``.
        configs: named configurations; ``"default"`` is the official one, ``"tiny"`` a
            random-weight configuration that runs on a 2-core CPU in well under a second.
        weights_help: where the official weights come from (shown when a file is missing).

    Args:
        config: a key of ``configs`` (None = ``"default"``).
        weights: a local checkpoint path, or None for random initialisation.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        allow_pickle: allow checkpoints that need full unpickling (unsafe; explicit opt-in).
        **options: plugin-specific options (documented by each plugin).
    """

    name: ClassVar[str]
    label_space: LabelSpace = LabelSpace.BINARY
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DETECT})
    configs: ClassVar[Mapping[str, Any]] = {}
    weights_help: ClassVar[str] = ""
    mask_interpolation: str = "bilinear"
    """How :meth:`predict_preprocessed` resizes a mask from the network's output to the image size:
    ``"bilinear"`` or ``"nearest"`` (``torch.nn.functional.interpolate``, ``align_corners=False``);
    recorded as ``mask_upsampling`` by :meth:`describe`."""
    wants_labels: bool = False
    """True only in an official teacher-forced evaluation mode (e.g. SIDA's ``eval_mode=official``):
    the runner then passes ``labels=`` to :meth:`predict_preprocessed`. Never set by honest modes."""

    def __init__(
        self,
        config: str | None = None,
        *,
        weights: str | Path | None = None,
        device: str = "cpu",
        allow_pickle: bool = False,
        **options: Any,
    ) -> None:
        self.config_name = config or "default"
        if self.config_name not in self.configs:
            hints = difflib.get_close_matches(self.config_name, list(self.configs), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, hints))}?" if hints else ""
            raise UnknownNameError(
                f"Unknown configuration {self.config_name!r} for model {self.name!r}.{hint} "
                f"Available: {', '.join(self.configs) or 'none'}"
            )
        self.config = self.configs[self.config_name]
        self.device = resolve_device(device)
        self.allow_pickle = allow_pickle
        self.options = dict(options)
        self.weights_path: Path | None = None
        self.weights_sha256: str | None = None
        path = None if weights is None else Path(weights).expanduser()
        if path is not None:  # cheap checks first: never build a large network for a missing file
            if not path.exists():
                raise UserError(
                    f"Weights for {self.name!r} not found: {path}."
                    + (f" {self.weights_help}" if self.weights_help else "")
                )
            self.check_weights(path)
        self.build(self.config, **options)
        if path is not None:
            self.load_weights(path)
            self.weights_path = path
            self.weights_sha256 = file_sha256(path)
        self.to(self.device)
        self.eval()

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def build(self, config: Any, **options: Any) -> None:
        """Create the network(s) for ``config`` with random (or packaged) weights."""

    @abc.abstractmethod
    def load_weights(self, path: Path) -> None:
        """Load a local checkpoint (official layout, or this harness's safetensors format)."""

    def check_weights(self, path: Path) -> None:
        """Cheap checks of an existing ``--weights`` path, run before :meth:`build` (default: none).

        Override to refuse a wrong folder (missing companion files, wrong key layout) before a large
        network is built or a large file is read."""

    @abc.abstractmethod
    def preprocess(self, image: np.ndarray) -> Any:
        """Apply the input policy to one RGB uint8 (H, W, 3) image; runs in loader workers."""

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        """Run the network on a stacked batch already on ``self.device``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward or predict_preprocessed")

    def modules(self) -> dict[str, torch.nn.Module]:
        """The torch modules of this detector (default: every nn.Module attribute)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.nn.Module)}

    # ------------------------------------------------------------------ provided
    @property
    def num_classes(self) -> int:
        return self.label_space.num_classes

    @property
    def input_policy(self) -> InputPolicy:
        """The preprocessing this model applies (override to describe it)."""
        return InputPolicy()

    def describe(self) -> dict[str, Any]:
        """Identity of this model for results files and the prediction-store key."""
        cfg = self.config
        cfg_dict = asdict(cfg) if is_dataclass(cfg) and not isinstance(cfg, type) else cfg
        return {
            "name": self.name,
            "config": self.config_name,
            "config_values": _jsonable(cfg_dict),
            "options": _jsonable(self.options),
            "label_space": self.label_space.value,
            "capabilities": sorted(c.value for c in self.capabilities),
            "input_policy": self.input_policy.to_dict(),
            "mask_upsampling": f"{self.mask_interpolation} (align_corners=False) to the image size"
            if Capability.LOCALIZE in self.capabilities else None,
            "weights": str(self.weights_path) if self.weights_path else None,
            "weights_sha256": self.weights_sha256,
        }

    def to(self, device: torch.device) -> "Detector":
        for m in self.modules().values():
            m.to(device)
        self.device = device
        return self

    def eval(self) -> "Detector":
        for m in self.modules().values():
            m.eval()
        return self

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Predict RGB uint8 images; the convenience path (preprocess + batch)."""
        items = [self.preprocess(img) for img in images]
        return self.predict_preprocessed(items, [img.shape[:2] for img in images])

    def predict_preprocessed(self, items: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Prediction]:
        """Predict a batch of preprocessed items; ``sizes`` are the (H, W) of the images.

        Items of equal shape are stacked and run together, so the results do not depend on
        the batch composition beyond floating-point batching effects.
        """
        results: dict[int, Prediction] = {}
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(tuple(item.shape), []).append(i)
        with torch.inference_mode():
            for idx in groups.values():
                batch = torch.stack([items[i] for i in idx]).to(self.device)
                out = self.forward(batch)
                probs = out.probs.detach().float().cpu().numpy().astype(np.float64)
                logits = None if out.logits is None else out.logits.detach().double().cpu().numpy()
                for j, i in enumerate(idx):
                    mask = conf = None
                    if out.mask is not None:
                        mask = resize_mask(out.mask[j], sizes[i], self.mask_interpolation)
                    if out.confidence is not None:
                        conf = resize_mask(out.confidence[j], sizes[i], self.mask_interpolation)
                    results[i] = Prediction(probs=probs[j], mask=mask, logits=None if logits is None else logits[j],
                                            confidence=conf)
        return [results[i] for i in range(len(items))]

    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        """Train on ``train`` with early stopping on ``val`` (never on test)."""
        raise UserError(f"Model {self.name!r} has no training recipe")

    def train_option_names(self) -> tuple[str, ...]:
        """Keys of ``TrainOptions.extra`` that :meth:`fit` reads (``sida-bench train --train-option``);
        () = none, so any such option is refused rather than ignored."""
        return ()


def resize_mask(mask: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize one (h, w) probability map to ``size`` = (H, W) (``bilinear`` with align_corners=False,
    or ``nearest``); float32 in [0, 1]."""
    m = mask.detach().float()
    if tuple(m.shape[-2:]) != tuple(size):
        extra = {"align_corners": False} if mode == "bilinear" else {}
        m = F.interpolate(m[None, None], size=tuple(size), mode=mode, **extra)[0, 0]
    return m.clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → cuda when available, else cpu; a clear error when cuda is asked but absent."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UserError(f"Unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Enum):
        return value.value
    return str(value)
