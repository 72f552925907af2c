"""SIDA-description parser: the official README answer, real-format variants, malformed answers,
the position vocabulary, and the sid-mini descriptions (which must parse and agree with their masks)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.explanation.parser import parse_answer
from bench.explanation.regions import describe_position, mask_centroid, region_from_words
from bench.sidmini.descriptions import describe

# hzlsaber/SIDA README, chat_description.py output for examples/figure3.png (line breaks as printed).
OFFICIAL = """[CLS] The image is tampered.[SEG]
 Type: {part tampered} Areas:<tampered position> The tampered area is located on the skier's right leg, \
specifically around the knee and ankle, in the lower half of the image.
Tampered Content:<Types of objects or parts> The skier's right leg, specifically the knee and ankle, showing the \
ski and the person's clothing.
Visual Inconsistencies:<lighting> The lighting on the tampered area does not match the rest of the image, showing \
a different shadow or highlight.<edges> The edges around the tampered area are unnaturally sharp or blurred, \
indicating a composite or altered element.<resolution> The resolution of the tampered area is slightly different \
from the rest of the image, showing a disparity in detail.<shadows> Shadows and reflections in the tampered area \
do not align with the lighting on other parts of the skier [end]."""
# The official SIDA (non-description) template answer (README, chat.py), with the decoder's "<s>".
TEMPLATE = ("<s> [CLS] This image is classified as tampered. It has been altered. [SEG] A mask highlighting the "
            "tampered region is provided.")


def test_official_readme_answer_parses_into_the_four_slots() -> None:
    p = parse_answer(OFFICIAL)
    assert p.parsed and p.error is None
    assert p.verdict == 2 and p.type_class == 2 and p.stated_class == 2
    assert p.slots["type"] == "part tampered"
    assert p.slots["areas"].startswith("The tampered area is located on the skier's right leg")
    assert p.slots["areas"].endswith("in the lower half of the image.")
    assert p.slots["content"].startswith("The skier's right leg") and "<" not in p.slots["content"]
    assert p.aspects == ["lighting", "edges", "resolution", "shadows"]
    assert p.slots["inconsistencies"].endswith("other parts of the skier")  # cut at [end]
    # "the skier's right leg" names no image position; "the lower half of the image" does
    assert [(r.y, r.x) for r in p.regions] == [((0.5, 1.0 + 1e-9), None)]
    assert p.description.startswith("Type: {part tampered}") and "[SEG]" not in p.description


@pytest.mark.parametrize("text, verdict, type_class, slots", [
    # the description stage's training target: "[CLS] The image is <cls> [SEG]? <description> [END]"
    ("[CLS] The image is tampered [SEG] Type: {part tampered} Areas:<tampered position> In the upper left corner "
     "of the image. Tampered Content:<Types of objects or parts> A dog. [END]", 2, 2, {"type", "areas", "content"}),
    ("[CLS] The image is full synthetic Type: {full synthetic} Visual Inconsistencies:<texture> Too smooth. "
     "<lighting> Flat light. [END]", 1, 1, {"type", "inconsistencies"}),
    ("[CLS] The image is real Type: {real} [END]", 0, 0, {"type"}),
    ("type: {Part Tampered} areas: here. tampered content: a cat.", None, 2, {"type", "areas", "content"}),
    ("[CLS] The image is fully synthetic. Type:{fully synthetic}", 1, 1, {"type"}),
])
def test_real_format_variants_parse(text: str, verdict: int | None, type_class: int, slots: set[str]) -> None:
    p = parse_answer(text)
    assert p.parsed, p.error
    assert (p.verdict, p.type_class, set(p.slots)) == (verdict, type_class, slots)


@pytest.mark.parametrize("text, reason", [
    (TEMPLATE, "no slots"),
    ("", "no slots"),
    ("Type: part tampered Areas: left.", "not '{TYPE}'"),
    ("Type: {banana} Areas: left.", "unknown type"),
    ("Type: {part tampered} Areas:<tampered position> The top.", "needs Areas and Tampered Content"),
    ("Areas: x. Type: {real}", "out of order"),
    ("Type: {real} Type: {real}", "twice"),
    ("Type: {part tampered} Areas:<p> Tampered Content:<c> a cat", "empty areas"),
    ("Type: {full synthetic} Visual Inconsistencies: it looks off", "pairs"),
    ("Type: {full synthetic} Visual Inconsistencies:<texture>", "pairs"),
    ("I think Type: {real}", "text before the first slot"),
])
def test_malformed_answers_are_unparseable_with_a_reason(text: str, reason: str) -> None:
    p = parse_answer(text)
    assert not p.parsed and p.slots == {} and p.aspects == []
    assert reason in (p.error or "")


def test_verdict_and_type_that_disagree_state_no_class() -> None:
    p = parse_answer("[CLS] The image is real. Type: {part tampered} Areas: a. Tampered Content: b.")
    assert p.parsed and p.contradictory and p.stated_class is None
    assert parse_answer(TEMPLATE).stated_class == 2  # the verdict alone states a class
    assert parse_answer("Nothing to see.").stated_class is None


def test_repeated_aspect_pairs_are_dropped_as_the_official_post_processing() -> None:
    p = parse_answer("Type: {full synthetic} Visual Inconsistencies:<texture> Smooth.<texture> Smooth.<edges> Soft.")
    assert p.aspects == ["texture", "edges"] and p.slots["inconsistencies"] == "Smooth. Soft."


@pytest.mark.parametrize("phrase, inside, outside", [
    ("in the upper left corner of the image", (0.2, 0.2), (0.2, 0.8)),
    ("the lower half of the image", (0.9, 0.1), (0.4, 0.5)),
    ("on the right side of the picture", (0.1, 0.7), (0.5, 0.3)),
    ("in the centre of the image", (0.5, 0.5), (0.2, 0.5)),
    ("the middle left part of the image", (0.5, 0.1), (0.2, 0.1)),
    ("at the bottom-right of the frame", (0.8, 0.8), (0.8, 0.2)),
])
def test_position_phrases_map_to_regions(phrase: str, inside: tuple[float, float], outside: tuple[float, float]) -> None:
    (region,) = parse_answer(phrase).regions
    assert region.contains(inside) and not region.contains(outside)


def test_unanchored_or_contradictory_positions_name_no_region() -> None:
    assert parse_answer("the man's left hand and the right leg").regions == []
    assert parse_answer("the upper lower part of the image").regions == []
    assert region_from_words(["left", "right"]) is None


def test_mask_centroid_and_describe_position_round_trip() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[0:2, 16:20] = True
    assert mask_centroid(mask) == pytest.approx((0.1, 0.9))
    assert mask_centroid(np.zeros((4, 4), dtype=bool)) is None
    assert mask_centroid(np.full((4, 4), 0.5, dtype=np.float32)) is None  # p > 0.5 only
    for y in np.linspace(0.01, 0.99, 13):
        for x in np.linspace(0.01, 0.99, 13):
            name = describe_position((y, x))
            (region,) = parse_answer(f"in the {name} part of the image").regions
            assert region.contains((y, x)), name


@pytest.mark.parametrize("label", [0, 1, 2])
def test_sid_mini_descriptions_parse_and_agree_with_their_masks(label: int) -> None:
    mask = np.zeros((32, 32), dtype=bool)
    mask[20:30, 2:12] = True  # lower left
    p = parse_answer(describe(label, "chelsea", mask if label == 2 else None))
    assert p.parsed and p.type_class == label and "tabby cat" in p.description
    if label == 2:
        assert p.regions and all(r.contains(mask_centroid(mask)) for r in p.regions)
        assert "lower left part of the image" in p.slots["areas"]


@pytest.mark.parametrize("label", [0, 1, 2])
def test_official_stage1_answers_and_templates_state_their_class(label: int) -> None:
    """``utils/SID_Set.py`` answers ("[CLS] The image is tampered [SEG]") and the fixed answers of the
    official ``evaluate`` (``sida.detector.TEMPLATES``): a verdict, no slots (unparseable as descriptions)."""
    from sida.detector import TEMPLATES
    from sida.prompts import description_answer, detection_answer

    for text in (detection_answer(label), TEMPLATES[label], description_answer(label, None)):
        p = parse_answer(text)
        assert p.verdict == label and p.stated_class == label and not p.parsed
    target = parse_answer(description_answer(label, describe(label, "coffee", _lower_left() if label == 2 else None)))
    assert target.parsed and target.stated_class == label and "[END]" not in target.description


def _lower_left() -> np.ndarray:
    mask = np.zeros((32, 32), dtype=bool)
    mask[20:30, 2:12] = True
    return mask
