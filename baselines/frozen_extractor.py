"""Baselines made of a frozen extractor network and a classifier (LGrad, LNP).

The extractor (LGrad's StyleGAN discriminator, LNP's CycleISP denoiser) turns each RGB uint8
image into another uint8 image (``extractor_view``: the file the official scripts write), then the
classifier reads that image under its own test geometry. The extractor runs once per image inside
:meth:`preprocess`, on the device of its weights, never trains, and has its own official file.

Weights: ``--weights`` is a folder holding the extractor's official file (``extractor_file``)
and exactly one classifier file, or the classifier file alone with the option
``<extractor_option>=PATH`` (as UnivFD's ``clip_weights``). Our own checkpoints store the
classifier, plus the extractor when it is random (``tiny``); otherwise they record the extractor
file's path and sha256, and that file (or the option) is read again at load time. An official
classifier file without an extractor file is refused: there are never silent random weights.

Training (:meth:`ExtractorDetector.fit`) memoizes the extractor's views by image content: the
extractor is frozen and deterministic, so the view of an image is the same in every epoch and in
every validation pass (the official scripts likewise write the views to disk once, then train the
classifier on those files). At most :data:`VIEW_MEMO_BYTES` of views are kept; images beyond that
are recomputed each time. Inference never memoizes.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from baselines.common import SingleLogitDetector
from bench.checkpoint import OUR_CONFIG, is_our_checkpoint, load_checkpoint, load_strict
from bench.errors import UserError
from bench.model import file_sha256

EXTRACTOR_PREFIX = "extractor."
CLASSIFIER_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".tar")
VIEW_MEMO_BYTES = 2 << 30
"""Most bytes of extractor views that one training run keeps in memory (2 GiB: all of sid-mini's
train and validation views are a few MB; SID-Set's 256 px LGrad views fit about 11,000 images)."""


class ViewMemo:
    """Extractor views keyed by a BLAKE2b digest of the input image (shape, dtype and bytes), stored
    read-only, up to ``max_bytes`` in total."""

    def __init__(self, max_bytes: int = VIEW_MEMO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.views: dict[bytes, np.ndarray] = {}

    @staticmethod
    def key(image: np.ndarray) -> bytes:
        digest = hashlib.blake2b(f"{image.shape}{image.dtype}".encode(), digest_size=16)
        digest.update(np.ascontiguousarray(image).data)
        return digest.digest()

    def view(self, image: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        key = self.key(image)
        cached = self.views.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        view = compute(image)
        if self.bytes + view.nbytes <= self.max_bytes:
            view = np.array(view)
            view.setflags(write=False)
            self.views[key] = view
            self.bytes += view.nbytes
        return view


class ExtractorDetector(SingleLogitDetector):
    """A :class:`SingleLogitDetector` with a frozen ``self.extractor`` network.

    Subclasses set ``extractor_option`` (the option naming the extractor file), ``extractor_file``
    (its official file name inside a weights folder), ``docs_anchor`` (where the docs describe the
    files) and implement :meth:`make_extractor`,
    :meth:`read_extractor_state` and :meth:`compute_view`.
    """

    extractor_option: ClassVar[str]
    extractor_file: ClassVar[str]
    docs_anchor: ClassVar[str]
    view_memo_bytes: ClassVar[int] = VIEW_MEMO_BYTES
    """The memo budget of :meth:`fit` (0 memoizes nothing)."""

    def option_names(self) -> tuple[str, ...]:
        return (*super().option_names(), self.extractor_option)

    def build(self, config: Any, **options: Any) -> None:
        super().build(config, **options)
        self.extractor_path: Path | None = None
        self.extractor_sha256: str | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(options.get("init_seed", 0)) + 1)
            self.extractor = self.make_extractor(config)
        self.extractor.requires_grad_(False).eval()
        self.view_memo: ViewMemo | None = None
        if options.get(self.extractor_option) is not None:
            self.load_extractor(Path(options[self.extractor_option]).expanduser())

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def make_extractor(self, config: Any) -> torch.nn.Module:
        """The extractor network with random weights."""

    @abc.abstractmethod
    def compute_view(self, image: np.ndarray) -> np.ndarray:
        """The uint8 image the official extractor script writes for one RGB uint8 image."""

    def extractor_view(self, image: np.ndarray) -> np.ndarray:
        """:meth:`compute_view`, memoized while :meth:`fit` runs (see the module docstring)."""
        if self.view_memo is None:
            return self.compute_view(image)
        return self.view_memo.view(image, self.compute_view)

    @contextmanager
    def memoized_views(self, max_bytes: int = VIEW_MEMO_BYTES) -> Iterator[ViewMemo]:
        """Memoize :meth:`extractor_view` inside the block."""
        self.view_memo = ViewMemo(max_bytes)
        try:
            yield self.view_memo
        finally:
            self.view_memo = None

    def fit(self, train: Any, val: Any, options: Any) -> dict[str, Any]:
        """The classifier's recipe (:meth:`SingleLogitDetector.fit`) with memoized extractor views."""
        with self.memoized_views(self.view_memo_bytes) as memo:
            report = super().fit(train, val, options)
        return {**report, "extractor_views": len(memo.views), "extractor_view_hits": memo.hits}

    @abc.abstractmethod
    def read_extractor_state(self, path: Path) -> dict[str, torch.Tensor]:
        """The extractor's state dict from its official file (layout checks included)."""

    # ------------------------------------------------------------------ loading
    def load_extractor(self, path: Path) -> None:
        if not path.is_file():
            raise UserError(f"{self.name} {self.extractor_option} file not found: {path}. {self.weights_help}")
        self.load_strict_hinted(self.extractor, self.read_extractor_state(path), path)
        self.extractor_path, self.extractor_sha256 = path, file_sha256(path)

    def load_strict_hinted(self, module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
        """:func:`load_strict` whose one-line error also names this configuration and the docs."""
        try:
            load_strict(module, state, path)
        except UserError as exc:
            hint = f"Expected the {self.name}:{self.config_name} layout; see {self.docs_anchor}"
            raise UserError(f"{exc}. {hint}") from exc

    def load_official(self, path: Path) -> None:
        if self.extractor_path is None:
            raise UserError(f"{self.name} needs its {self.extractor_option} file ({self.extractor_file}) as well as "
                            f"{path.name}: pass a folder holding both with --weights, or the option "
                            f"{self.extractor_option}=PATH. {self.weights_help}")
        self.load_classifier(path)

    @abc.abstractmethod
    def load_classifier(self, path: Path) -> None:
        """Load an official classifier file into ``self.network`` (strict, layout checked)."""

    def load_official_dir(self, path: Path) -> None:
        if self.extractor_path is None:
            if not (path / self.extractor_file).is_file():
                raise UserError(f"{path} has no {self.extractor_file}. {self.weights_help}")
            self.load_extractor(path / self.extractor_file)
        others = sorted(p for p in path.iterdir()
                        if p.is_file() and p.suffix in CLASSIFIER_SUFFIXES and p.name != self.extractor_file)
        if len(others) != 1:
            raise UserError(f"{path}: expected exactly one classifier file next to {self.extractor_file}, "
                            f"found {[p.name for p in others]}. {self.weights_help}")
        self.load_classifier(others[0])

    def load_weights(self, path: Path) -> None:
        if not is_our_checkpoint(path):
            if path.is_dir() and (path / OUR_CONFIG).is_file():
                raise UserError(f"{path} has {OUR_CONFIG} but no model.safetensors")
            return super().load_weights(path)
        state, saved = load_checkpoint(path)
        self.check_saved_config(saved, path)
        if not any(k.startswith(EXTRACTOR_PREFIX) for k in state) and self.extractor_path is None:
            recorded = saved.get("extractor_weights")
            if not recorded:
                raise UserError(f"{path} stores only the classifier; pass {self.extractor_option}=PATH. "
                                f"{self.weights_help}")
            self.load_extractor(Path(recorded))
        self.load_our_state(state, path)

    # ------------------------------------------------------------------ our checkpoints
    def state_for_checkpoint(self) -> dict[str, torch.Tensor]:
        state = dict(self.network.state_dict())
        if self.extractor_path is None:
            # cloned: LNP's shared PReLU appears under several keys, which safetensors refuses to alias
            state.update({EXTRACTOR_PREFIX + k: v.clone() for k, v in self.extractor.state_dict().items()})
        return state

    def load_our_state(self, state: Mapping[str, torch.Tensor], source: Path | str) -> None:
        extractor = {k[len(EXTRACTOR_PREFIX):]: v for k, v in state.items() if k.startswith(EXTRACTOR_PREFIX)}
        load_strict(self.network, {k: v for k, v in state.items() if not k.startswith(EXTRACTOR_PREFIX)}, source)
        if extractor:
            load_strict(self.extractor, extractor, source)

    def describe(self) -> dict[str, Any]:
        """Adds the extractor file to the identity (also written into our checkpoints' config.json)."""
        return {**super().describe(), "extractor_weights": str(self.extractor_path) if self.extractor_path else None,
                "extractor_sha256": self.extractor_sha256}

    def extractor_device(self) -> torch.device:
        return next(self.extractor.parameters()).device
