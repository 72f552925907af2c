"""Every runtime dependency of pyproject.toml is imported by the package (no dependency without an importer)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"open_clip_torch": "open_clip", "segment-anything": "segment_anything", "scikit-learn": "sklearn",
                "scikit-image": "skimage", "PyYAML": "yaml", "Pillow": "PIL", "opencv-python-headless": "cv2",
                "rouge-score": "rouge_score"}
"""Distribution name → import name, where they differ."""


def test_every_runtime_dependency_has_an_importer() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    sources = "\n".join(p.read_text(encoding="utf-8") for pkg in ("bench", "baselines", "sida")
                        for p in (ROOT / pkg).rglob("*.py"))
    unused = []
    for requirement in project["dependencies"]:
        dist = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        module = IMPORT_NAMES.get(dist, dist)
        if not re.search(rf"^\s*(import|from) {re.escape(module)}\b", sources, flags=re.MULTILINE):
            unused.append(dist)
    assert not unused, f"dependencies that no module of bench/, baselines/ or sida/ imports: {unused}"
