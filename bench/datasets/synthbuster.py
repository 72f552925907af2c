"""Synthbuster (Bammey, 2023): one folder per generator, every image fake; RAISE-1k reals apart.

Layout: ``<root>/<generator>/<raise id>.png`` (e.g. ``dalle3/r000da54ft.png``); an optional
``<root>/prompts.csv`` is ignored. The real RAISE-1k images are not part of the release: pass
``real_root=PATH`` (a folder with the RAISE images, any extension, searched recursively) and the
reals whose file stem matches a fake's stem are added with label 0 (``meta["source"] = "raise"``).
Reals that match no fake are left out and counted under ``listing.reals_unmatched``; fake stems
with no real are counted under ``listing.fakes_without_real``. Ids: ``"<generator>/<stem>"`` and
``"raise/<stem>"``. Binary labels; ``meta["group"]`` is ``"real"`` or the generator folder
(Synthbuster is scored per generator).
"""

from __future__ import annotations

from pathlib import Path

from bench.datasets.common import Entry, ListedDataset, list_images, list_images_recursive, list_subdirs, require_dir
from bench.errors import UserError
from bench.types import LabelSpace


class Synthbuster(ListedDataset):
    """Synthbuster generator folders plus optional matched RAISE reals (see module docstring)."""

    name = "synthbuster"
    label_space = LabelSpace.BINARY
    splits = ("test",)
    extra_options = ("real_root",)

    def _list(self) -> list[Entry]:
        root = require_dir(self.root, "Synthbuster root")
        fakes: list[Entry] = []
        for folder in list_subdirs(root):
            for path in list_images(folder, self.listing_log):
                meta = {"source": folder.name, "generator": folder.name, "group": folder.name, "path": str(path)}
                fakes.append(Entry(f"{folder.name}/{path.stem}", 1, path, None, meta))
        if not fakes:
            raise UserError(f"Synthbuster root {root} has no generator folders with images")
        reals: list[Entry] = []
        real_root = self.extra.get("real_root")
        fake_stems = {Path(str(e.image)).stem for e in fakes}
        if real_root is not None:
            real_dir = require_dir(Path(real_root).expanduser(), "Synthbuster real_root (RAISE-1k)")
            by_stem: dict[str, Path] = {}
            for path in list_images_recursive(real_dir, self.listing_log):
                by_stem.setdefault(path.stem, path)
            matched = sorted(set(by_stem) & fake_stems)
            reals = [Entry(f"raise/{stem}", 0, by_stem[stem], None,
                           {"source": "raise", "generator": "RAISE-1k", "group": "real", "path": str(by_stem[stem])})
                     for stem in matched]
            self.listing_problems = {"reals_unmatched": len(set(by_stem) - fake_stems),
                                     "fakes_without_real": len(fake_stems - set(by_stem))}
        else:
            self.listing_problems = {"reals_missing_no_real_root": 1}
        return reals + fakes
