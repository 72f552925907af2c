"""GenImage (Zhu et al., NeurIPS 2023): ``<root>/<generator>/<split>/{ai,nature}/*``.

Binary labels: ``ai`` 1 (fake), ``nature`` 0 (real), folder names matched case-insensitively;
extensions too (``.PNG`` occurs). Splits are ``train`` and ``val`` (``validation`` and ``test``
are accepted as aliases of ``val``, the split GenImage evaluates on). ``meta["source"]`` is the
generator folder (e.g. ``imagenet_ai_0419_sdv4``), ``meta["generator"]`` a readable alias and
``meta["group"]`` ``"real"`` for nature images and the generator folder for ai images (GenImage is
scored per generator). Ids are ``"<generator>/<ai|nature>/<stem>"``.
Known bias of the release: real images are JPEG, fake ones PNG.
"""

from __future__ import annotations

from pathlib import Path

from bench.datasets.common import Entry, ListedDataset, list_images, list_subdirs, require_dir
from bench.errors import UserError
from bench.types import LabelSpace

ALIASES: dict[str, str] = {
    "imagenet_ai_0508_adm": "ADM",
    "imagenet_ai_0419_biggan": "BigGAN",
    "imagenet_glide": "GLIDE",
    "imagenet_midjourney": "Midjourney",
    "imagenet_ai_0419_sdv4": "Stable Diffusion V1.4",
    "imagenet_ai_0424_sdv5": "Stable Diffusion V1.5",
    "imagenet_ai_0419_vqdm": "VQDM",
    "imagenet_ai_0424_wukong": "Wukong",
}
SPLIT_ALIASES = {"validation": "val", "test": "val"}
CLASSES = (("nature", 0), ("ai", 1))


def _child(folder: Path | None, name: str) -> Path | None:
    """A sub-folder matched case-insensitively (None when absent)."""
    if folder is None or not folder.is_dir():
        return None
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() == name:
            return child
    return None


class GenImage(ListedDataset):
    """GenImage generator folders (see module docstring)."""

    name = "genimage"
    label_space = LabelSpace.BINARY
    splits = ("train", "val")

    def _list(self) -> list[Entry]:
        root = require_dir(self.root, "GenImage root")
        split = SPLIT_ALIASES.get(self.split, self.split)
        entries: list[Entry] = []
        for gen_dir in list_subdirs(root):
            split_dir = _child(gen_dir, split)
            for class_name, label in CLASSES:
                folder = _child(split_dir, class_name)
                for path in list_images(folder, self.listing_log) if folder is not None else []:
                    meta = {"source": gen_dir.name, "generator": ALIASES.get(gen_dir.name, gen_dir.name),
                            "group": "real" if label == 0 else gen_dir.name, "path": str(path)}
                    entries.append(Entry(f"{gen_dir.name}/{class_name}/{path.stem}", label, path, None, meta))
        if not entries:
            raise UserError(f"GenImage root {root}: no images under <generator>/{split}/{{ai,nature}}/")
        return entries
