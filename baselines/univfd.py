"""UnivFD: "Towards Universal Fake Image Detectors that Generalize Across Generative Models"
(Ojha, Li, Lee, CVPR 2023). Official code: WisconsinAIVision/UniversalFakeDetect
(models/clip_models.py, validate.py, train.py).

- Network: the OpenAI CLIP ViT-L/14 image tower (``encode_image``: 768-d projected
  embedding; QuickGELU; fp32 on CPU) — built here with open_clip's ``VisionTransformer`` —
  followed by ``fc = Linear(768, 1)``; sigmoid(logit) = P(fake). The backbone is frozen.
- Test preprocessing (``validate.py``): centre crop 224 with no resize, CLIP mean/std. Images
  smaller than 224 are zero-padded (black) to 224, as torchvision ``CenterCrop`` does.
- Weights: ``pretrained_weights/fc_weights.pth`` (in the repository; ``{'weight': [1, 768],
  'bias': [1]}``) plus an OpenAI CLIP ViT-L/14 file. Pass ``--weights`` as a folder holding
  ``fc_weights.pth`` and one CLIP file, or as the fc file with option ``clip_weights=PATH``.
  CLIP files accepted: a state dict (``.safetensors``/``.bin``/``.pt``) with OpenAI/open_clip key
  names (``visual.conv1.weight``, ``visual.transformer.resblocks.N...``, ``visual.proj``; text keys
  are ignored), e.g. ``open_clip_model.safetensors`` of the Hugging Face repo
  ``timm/vit_large_patch14_clip_224.openai``; or OpenAI's TorchScript ``ViT-L-14.pt``
  (from ``clip.load``), which needs ``--allow-pickle`` because TorchScript cannot be read
  weights-only. Precision as the official loader (OpenAI ``clip/model.py``, vendored by UnivFD):
  ``build_model`` runs ``convert_weights`` before ``load_state_dict``, so the weights and biases of
  every Conv/Linear layer (patch embedding, attention ``out_proj``, MLP), the attention
  ``in_proj_weight``/``in_proj_bias`` and ``proj`` are rounded to fp16, while ``class_embedding``,
  ``positional_embedding`` and the LayerNorms keep the file's precision; ``clip.load(device="cpu")``
  then casts everything to fp32. :func:`round_like_openai` reproduces this, so an fp32 CLIP file
  gives the official logits (the released fp16 archive is unchanged by it). The files are checked
  (present, one CLIP file, key layout of a safetensors header) before the ViT is built.
- Training (README): fc only, AdamW lr 1e-4 (β1 0.9, weight decay 0), batch 256, resize 256,
  blur σ~U[0,3] / JPEG q~U{30..100} each p=0.5, random crop 224, flip; lr/10 on a 5-epoch
  plateau. Our checkpoints then store only ``fc.*`` and record the CLIP file they need.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from open_clip.transformer import QuickGELU, VisionTransformer
from safetensors import SafetensorError, safe_open
from torch import nn

from baselines.common import CLIP_MEAN, CLIP_STD, SingleLogitDetector, center_crop, to_tensor
from baselines.training import TrainRecipe
from bench.checkpoint import is_our_checkpoint, load_checkpoint, load_raw, load_strict, tensors_only
from bench.errors import UserError
from bench.fixed_filters import dct_patch_filters
from bench.model import InputPolicy, file_sha256

FC_FILE = "fc_weights.pth"
CLIP_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class UnivFDConfig:
    """The CLIP image tower's shape (ViT-L/14 by default; heads = width / 64 as OpenAI) and the test crop."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    embed_dim: int = 768
    crop: int = 224
    dct_patch_gains: tuple[float, float] | None = None
    """Tiny configurations only: a fixed DCT patch embedding (bench.fixed_filters) with these
    (low, high) gains stands in for pretrained CLIP weights; None = the CLIP file's (official)."""
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adamw", lr=1e-4, weight_decay=0.0, batch_size=256, epochs=100, schedule="plateau", patience=5,
        load_size=256, crop_size=224, blur_prob=0.5, jpeg_prob=0.5))
    weights_source: str = "WisconsinAIVision/UniversalFakeDetect pretrained_weights/fc_weights.pth + OpenAI CLIP ViT-L/14"


# sid-mini-sized recipe: native resolution (no resize), no blur/JPEG.
_TINY_TRAIN = TrainRecipe(optimizer="adamw", lr=1e-2, batch_size=32, epochs=8, schedule="plateau",
                          load_size=None, crop_size=64)


class UnivFDNet(nn.Module):
    """CLIP image tower (``visual``, frozen) + ``fc``; returns (B, num_outputs) logits."""

    def __init__(self, config: UnivFDConfig, num_outputs: int) -> None:
        super().__init__()
        self.visual = VisionTransformer(
            image_size=config.image_size, patch_size=config.patch_size, width=config.width, layers=config.layers,
            heads=config.heads, mlp_ratio=4.0, output_dim=config.embed_dim, act_layer=QuickGELU,
        )
        if config.dct_patch_gains is not None:
            with torch.no_grad():
                conv = self.visual.conv1
                conv.weight.copy_(dct_patch_filters(conv.kernel_size[0], conv.out_channels, *config.dct_patch_gains))
        self.visual.requires_grad_(False)
        self.fc = nn.Linear(config.embed_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.visual(x))


def read_clip_visual_state(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The image-tower tensors of a CLIP file, keys without ``visual.``, as fp32."""
    if path.suffix != ".safetensors" and zipfile.is_zipfile(path) and _is_torchscript(path):
        if not allow_pickle:
            raise UserError(f"{path} is a TorchScript archive (OpenAI clip.load format), which cannot be read "
                            "weights-only. Pass --allow-pickle if you trust it, or use the safetensors file "
                            "open_clip_model.safetensors of timm/vit_large_patch14_clip_224.openai.")
        state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    else:
        obj = load_raw(path, allow_pickle=allow_pickle)
        if isinstance(obj, Mapping) and "state_dict" in obj:
            obj = obj["state_dict"]
        state = {k: v for k, v in dict(obj).items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else obj
        state = tensors_only(state, path)
    if any(k.startswith("blocks.") or k.startswith("vision_model.") for k in state):
        raise UserError(f"{path} uses timm/Hugging Face key names; UnivFD needs the OpenAI/open_clip layout "
                        "(visual.conv1.weight, visual.transformer.resblocks.*, visual.proj)")
    if "visual.proj" in state:
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return {k: v.float() for k, v in state.items()}


def round_like_openai(visual: nn.Module) -> None:
    """Round, in place, the tensors OpenAI's ``convert_weights`` stores in fp16 (see module docstring)."""
    with torch.no_grad():
        for module in visual.modules():
            tensors: list[torch.Tensor | None] = []
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                tensors += [module.weight, module.bias]
            if isinstance(module, nn.MultiheadAttention):
                tensors += [getattr(module, name) for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight",
                                                                 "v_proj_weight", "in_proj_bias", "bias_k", "bias_v")]
            if isinstance(getattr(module, "proj", None), torch.Tensor):
                tensors.append(module.proj)
            for t in tensors:
                if t is not None:
                    t.copy_(t.half().float())


def check_clip_file(path: Path, help_text: str) -> None:
    """Cheap checks of a CLIP file before anything is built: present, readable, OpenAI/open_clip key names
    (a safetensors header is read without its tensors; other formats are checked when loaded)."""
    if not path.is_file():
        raise UserError(f"CLIP weights not found: {path}. {help_text}")
    if path.suffix != ".safetensors":
        return
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({exc})") from exc
    if any(k.startswith(("blocks.", "vision_model.")) for k in keys):
        raise UserError(f"{path} uses timm/Hugging Face key names; UnivFD needs the OpenAI/open_clip layout "
                        "(visual.conv1.weight, visual.transformer.resblocks.*, visual.proj)")
    if not any(k in ("visual.proj", "proj") for k in keys):
        raise UserError(f"{path} has no CLIP image-tower projection (visual.proj): not an OpenAI/open_clip CLIP "
                        f"file. {help_text}")


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as zf:
        return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in zf.namelist())


class UnivFD(SingleLogitDetector):
    """UnivFD detector; options: ``clip_weights`` (path), ``num_classes`` (2 or 3)."""

    name = "univfd"
    configs = {
        "default": UnivFDConfig(),
        "tiny": UnivFDConfig(image_size=64, patch_size=4, width=64, layers=2, heads=1, embed_dim=64, crop=64,
                             dct_patch_gains=(0.1, 4.0), train=_TINY_TRAIN,
                             weights_source="random; fixed DCT patch embedding (bench.fixed_filters)"),
    }
    weights_help = (
        "UnivFD weights: pretrained_weights/fc_weights.pth from github.com/WisconsinAIVision/UniversalFakeDetect and "
        "the OpenAI CLIP ViT-L/14 weights (open_clip_model.safetensors of huggingface.co/timm/"
        "vit_large_patch14_clip_224.openai, or OpenAI's ViT-L-14.pt with --allow-pickle); put both in one folder "
        "and pass it with --weights."
    )

    def option_names(self) -> tuple[str, ...]:
        return ("num_classes", "init_seed", "clip_weights")

    def build(self, config: UnivFDConfig, **options: Any) -> None:
        if "clip_weights" in options:  # fail before the 300M-parameter tower is built
            check_clip_file(Path(options["clip_weights"]), self.weights_help)
        super().build(config, **options)
        if "clip_weights" in options:
            self.load_clip(Path(options["clip_weights"]))

    def check_weights(self, path: Path) -> None:
        """The files ``--weights`` needs are there (fc file, one CLIP file) before the network is built."""
        if is_our_checkpoint(path) or "clip_weights" in self.options:
            return
        if path.is_dir():
            if not (path / FC_FILE).is_file():
                raise UserError(f"{path} has no {FC_FILE}. {self.weights_help}")
            check_clip_file(self._clip_in(path), self.weights_help)
        else:
            raise UserError(f"UnivFD needs the CLIP ViT-L/14 weights as well as {path.name}: pass a folder holding "
                            "both with --weights, or the option clip_weights=PATH. " + self.weights_help)

    def _clip_in(self, folder: Path) -> Path:
        clips = sorted(p for p in folder.iterdir() if p.suffix in CLIP_SUFFIXES and p.name != FC_FILE)
        if len(clips) != 1:
            raise UserError(f"{folder}: expected exactly one CLIP file next to {FC_FILE}, "
                            f"found {[p.name for p in clips]}")
        return clips[0]

    def make_network(self, config: UnivFDConfig, num_outputs: int) -> nn.Module:
        self.clip_path: Path | None = None
        self.clip_sha256: str | None = None
        return UnivFDNet(config, num_outputs)

    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(resize=None, crop=self.config.crop, mean=CLIP_MEAN, std=CLIP_STD,
                           interpolation="none",
                           notes="UniversalFakeDetect validate.py: centre crop only; images smaller than the crop "
                                 "are zero-padded (torchvision CenterCrop)")

    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        return center_crop(image, self.config.crop)

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image, CLIP_MEAN, CLIP_STD)

    # ------------------------------------------------------------------ loading
    def load_clip(self, path: Path) -> None:
        check_clip_file(path, self.weights_help)
        load_strict(self.network.visual, read_clip_visual_state(path, self.allow_pickle), path)
        round_like_openai(self.network.visual)
        self.clip_path, self.clip_sha256 = path, file_sha256(path)

    def load_fc(self, path: Path) -> None:
        load_strict(self.network.fc, tensors_only(load_raw(path, allow_pickle=self.allow_pickle), path), path)

    def load_official(self, path: Path) -> None:
        if self.clip_path is None:
            raise UserError(f"UnivFD needs the CLIP ViT-L/14 weights as well as {path.name}: pass a folder holding "
                            "both with --weights, or the option clip_weights=PATH. " + self.weights_help)
        self.load_fc(path)

    def load_official_dir(self, path: Path) -> None:
        if not (path / FC_FILE).is_file():
            raise UserError(f"{path} has no {FC_FILE}. {self.weights_help}")
        if self.clip_path is None:
            self.load_clip(self._clip_in(path))
        self.load_fc(path / FC_FILE)

    def load_weights(self, path: Path) -> None:
        if not is_our_checkpoint(path):
            return super().load_weights(path)
        state, saved = load_checkpoint(path)
        self.check_saved_config(saved, path)
        if not any(k.startswith("visual.") for k in state) and self.clip_path is None:
            clip = saved.get("clip_weights")
            if not clip:
                raise UserError(f"{path} stores only the fc layer; pass clip_weights=PATH. {self.weights_help}")
            self.load_clip(Path(clip))
        self.load_our_state(state, path)

    # ------------------------------------------------------------------ training hooks
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.network.fc.parameters())

    def set_train_mode(self, training: bool) -> None:
        self.network.train(training)
        self.network.visual.eval()

    def state_for_checkpoint(self) -> dict[str, torch.Tensor]:
        if self.clip_path is None:
            return dict(self.network.state_dict())
        return {f"fc.{k}": v for k, v in self.network.fc.state_dict().items()}

    def load_our_state(self, state: Mapping[str, torch.Tensor], source: Path | str) -> None:
        if any(k.startswith("visual.") for k in state):
            load_strict(self.network, state, source)
        else:
            load_strict(self.network.fc, {k.removeprefix("fc."): v for k, v in state.items()}, source)

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), "clip_weights": str(self.clip_path) if self.clip_path else None,
                "clip_sha256": self.clip_sha256}
