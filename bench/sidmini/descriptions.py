"""sid-mini reference descriptions in the SIDA-description format, written from what the builder knows.

The builder knows each image's class, the source photograph (its subject) and, for tampered
images, the mask (position from its centroid, size from its area). A description is written for
a subset, as SID-Set describes ~3,000 of its images: every :data:`DESCRIBE_EVERY`-th index of each
class and split. The text follows the slot grammar of :mod:`bench.explanation.parser` (the
official README example's headers: ``Type: {...}``, ``Areas:<tampered position>``,
``Tampered Content:<Types of objects or parts>``, ``Visual Inconsistencies:<aspect> ...``); the
position phrase comes from :func:`bench.explanation.regions.describe_position`, so it agrees with
the mask by construction. Only the tampered form is attested officially; the real and
full-synthetic forms use the same headers (docs/explanations.md).
"""

from __future__ import annotations

import numpy as np

from bench.explanation.regions import describe_position, mask_centroid

DESCRIBE_EVERY = 3
SUBJECTS: dict[str, str] = {
    "astronaut": "an astronaut in a spacesuit in front of a flag",
    "coffee": "a cup of coffee on a saucer",
    "rocket": "a rocket on its launch pad",
    "motorcycle_left": "a motorcycle parked in a workshop",
    "motorcycle_right": "a motorcycle parked in a workshop",
    "china": "a Chinese temple roof among trees",
    "hubble_deep_field": "galaxies of the Hubble deep field",
    "immunohistochemistry": "a stained tissue section under a microscope",
    "chelsea": "a tabby cat",
    "flower": "a pink flower with green leaves",
    "retina": "a photograph of a human retina",
    "grace_hopper": "a portrait of Grace Hopper in uniform",
}


def is_described(index: int) -> bool:
    """Whether sample ``index`` (of its class and split) belongs to the description subset."""
    return index % DESCRIBE_EVERY == 0


def describe(label: int, photo: str, mask: np.ndarray | None = None) -> str:
    """The description of one sid-mini image (0 real, 1 full synthetic, 2 tampered with its mask)."""
    subject = SUBJECTS.get(photo, f"the photograph {photo!r}")
    if label == 0:
        return (f"Type: {{real}} Visual Inconsistencies:<lighting> The lighting on {subject} is consistent "
                "across the whole image.<texture> The texture shows natural camera noise without periodic "
                "patterns.")
    if label == 1:
        return ("Type: {full synthetic} Visual Inconsistencies:<texture> The whole image carries a faint periodic "
                f"up-sampling pattern that a camera does not produce.<details> Fine details of {subject} look "
                "smoothed and repetitive everywhere.")
    if mask is None:
        raise ValueError("a tampered sid-mini description needs its mask")
    point = mask_centroid(mask)
    if point is None:
        raise ValueError("a tampered sid-mini mask has no forged pixel")
    position, area = describe_position(point), float(mask.mean())
    where = "the centre of the image" if position == "centre" else f"the {position} part of the image"
    return (f"Type: {{part tampered}} Areas:<tampered position> The tampered area is located in {where}, "
            f"covering about {area:.0%} of it. Tampered Content:<Types of objects or parts> A patch of {subject} "
            f"in {where} was regenerated and blended back into the photograph. Visual Inconsistencies:<texture> "
            "The tampered patch carries a periodic up-sampling pattern that the rest of the image lacks.<edges> "
            "The boundary of the patch is softer than the other edges of the image.")
