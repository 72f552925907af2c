"""A deterministic parser for SIDA-description answers (the grammar of docs/explanations.md).

The official description model (hzlsaber/SIDA README, ``chat_description.py``) answers::

    [CLS] The image is tampered.[SEG] Type: {part tampered} Areas:<tampered position> The tampered
    area is located ... in the lower half of the image. Tampered Content:<Types of objects or parts>
    The skier's right leg ... Visual Inconsistencies:<lighting> The lighting ...<edges> The edges
    ... [end].

Grammar (case-insensitive headers; whitespace, including new lines, collapses to one space)::

    answer       := MARKUP* verdict? MARKUP* description? END?
    verdict      := ("The image is" | "This image is classified as") CLASS "."?
    CLASS        := "real" | "full synthetic" | "fully synthetic" | "tampered"
    description  := type_slot areas_slot? content_slot? incons_slot?     (this order, each once)
    type_slot    := "Type:" "{" TYPE "}"
    areas_slot   := "Areas:" ("<" TAG ">")? TEXT
    content_slot := "Tampered Content:" ("<" TAG ">")? TEXT
    incons_slot  := "Visual Inconsistencies:" ("<" ASPECT ">" TEXT)+
    MARKUP       := "[CLS]" | "[SEG]" | "<s>" | "</s>";  END := "[END]" "."?

``TYPE`` names a class: it contains "tamper" (tampered), "synthetic" (full synthetic) or is "real" /
"authentic" (real). A description is *parsed* when it has a type slot of a known class; a tampered
type also needs non-empty Areas and Tampered Content slots; a Visual Inconsistencies header needs at
least one ``<aspect> text`` pair. Anything else is *unparseable*, with the reason recorded, and no slot
is guessed. Repeated identical ``<aspect> text`` pairs are dropped, as ``remove_repeated_tags`` in the
official ``chat_description.py`` does.

Positions (:mod:`bench.explanation.regions`) are read only from phrases anchored to the image,
``[the] POSITION [POSITION] [half|side|corner|part|portion|area|region|section|quadrant|edge] of the
(image|picture|photo|photograph|frame)``, so "the skier's right leg" names no position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bench.explanation.regions import POSITION_WORDS, Region, region_from_words
from bench.types import FULL_SYNTHETIC, REAL, TAMPERED

CLASS_WORDS = {"real": REAL, "full synthetic": FULL_SYNTHETIC, "fully synthetic": FULL_SYNTHETIC, "tampered": TAMPERED}
MARKUP = re.compile(r"\[(?:CLS|SEG)\]|</?s>", re.IGNORECASE)
END = re.compile(r"\[END\]\s*\.?", re.IGNORECASE)
VERDICT = re.compile(r"^\s*(?:the image is|this image is classified as)\s+(real|full(?:y)? synthetic|tampered)\b\s*\.?",
                     re.IGNORECASE)
HEADERS = (("type", r"Type\s*:"), ("areas", r"Areas\s*:"), ("content", r"Tampered\s+Content\s*:"),
           ("inconsistencies", r"Visual\s+Inconsistencies\s*:"))
HEADER = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in HEADERS), re.IGNORECASE)
TAG = re.compile(r"<([^<>]+)>")
_WORDS = "|".join(POSITION_WORDS)
POSITION = re.compile(
    rf"\b((?:{_WORDS})(?:[\s-]+(?:{_WORDS}))?)(?:[\s-]+(?:half|side|corner|part|portion|area|region|section|"
    rf"quadrant|edge))?\s+of\s+the\s+(?:image|picture|photo|photograph|frame)\b", re.IGNORECASE)
SLOT_NAMES = ("type", "areas", "content", "inconsistencies")


@dataclass
class ParsedAnswer:
    """What :func:`parse_answer` reads from one text.

    Attributes:
        verdict: class of the verdict clause (0 real, 1 full synthetic, 2 tampered) or ``None``.
        description: the text after the verdict with markup removed (what text metrics compare).
        slots: slot name → text (``type``: the brace value, lower case; ``inconsistencies``: the
            ``<aspect> text`` pairs joined by spaces); empty unless ``parsed``.
        aspects: the Visual Inconsistencies aspects (lower case, in order).
        type_class: the class the type slot names, or ``None``.
        error: why the description is unparseable (``None`` when parsed).
        regions: the positions named anywhere in the description, in order (contradictory phrases skipped).
    """

    verdict: int | None
    description: str
    slots: dict[str, str] = field(default_factory=dict)
    aspects: list[str] = field(default_factory=list)
    type_class: int | None = None
    error: str | None = None
    regions: list[Region] = field(default_factory=list)

    @property
    def parsed(self) -> bool:
        return bool(self.slots) and self.error is None

    @property
    def stated_class(self) -> int | None:
        """The class the text states: the verdict, else the type slot; ``None`` if absent or contradictory."""
        classes = {c for c in (self.verdict, self.type_class) if c is not None}
        return classes.pop() if len(classes) == 1 else None

    @property
    def contradictory(self) -> bool:
        return self.verdict is not None and self.type_class is not None and self.verdict != self.type_class


def normalise(text: str) -> str:
    """Markup removed, ``[END]`` and all after it dropped, whitespace collapsed."""
    text = END.split(text, maxsplit=1)[0]
    return " ".join(MARKUP.sub(" ", text).split())


def type_class(value: str) -> int | None:
    """The class a type-slot value names (``"part tampered"`` → 2), or ``None``."""
    v = " ".join(value.lower().split())
    if "tamper" in v:
        return TAMPERED
    if "synthetic" in v:
        return FULL_SYNTHETIC
    if v in ("real", "authentic"):
        return REAL
    return None


def find_regions(text: str) -> list[Region]:
    """The image-anchored position phrases of ``text`` as regions (contradictory ones skipped)."""
    out = []
    for match in POSITION.finditer(text):
        region = region_from_words(re.split(r"[\s-]+", match.group(1).lower()))
        if region is not None:
            out.append(region)
    return out


def parse_answer(text: str | None) -> ParsedAnswer:
    """Parse one model answer or reference description (see the module docstring)."""
    clean = normalise(text or "")
    verdict = None
    match = VERDICT.match(clean)
    if match:
        verdict = CLASS_WORDS[" ".join(match.group(1).lower().replace("fully", "full").split())]
        clean = clean[match.end():].strip()
    answer = ParsedAnswer(verdict=verdict, description=clean, regions=find_regions(clean))
    headers = list(HEADER.finditer(clean))
    if not headers:
        answer.error = "no slots (no 'Type:' header)"
        return answer
    names = [h.lastgroup or "" for h in headers]
    if headers[0].start() != 0 and clean[: headers[0].start()].strip():
        return _fail(answer, f"text before the first slot: {clean[: headers[0].start()].strip()[:40]!r}")
    if len(set(names)) != len(names):
        return _fail(answer, "a slot appears twice")
    if names != sorted(names, key=SLOT_NAMES.index) or names[0] != "type":
        return _fail(answer, f"slots out of order: {', '.join(names)} (expected type, areas, content, inconsistencies)")
    bodies = {name: clean[h.end(): headers[i + 1].start() if i + 1 < len(headers) else len(clean)].strip()
              for i, (name, h) in enumerate(zip(names, headers))}
    type_match = re.fullmatch(r"\{([^{}]+)\}", bodies["type"])
    if not type_match:
        return _fail(answer, f"the type slot is not '{{TYPE}}': {bodies['type'][:40]!r}")
    answer.type_class = type_class(type_match.group(1))
    if answer.type_class is None:
        return _fail(answer, f"unknown type {type_match.group(1)!r}")
    slots = {"type": " ".join(type_match.group(1).lower().split())}
    for name in ("areas", "content"):
        if name in bodies:
            body = re.sub(r"^<[^<>]*>", "", bodies[name]).strip()
            if not body:
                return _fail(answer, f"empty {name} slot")
            slots[name] = body
    if answer.type_class == TAMPERED and not ("areas" in slots and "content" in slots):
        return _fail(answer, "a tampered type needs Areas and Tampered Content slots")
    if "inconsistencies" in bodies:
        pairs = _aspect_pairs(bodies["inconsistencies"])
        if pairs is None:
            return _fail(answer, "Visual Inconsistencies needs '<aspect> text' pairs")
        answer.aspects = [a for a, _ in pairs]
        slots["inconsistencies"] = " ".join(t for _, t in pairs)
    answer.slots = slots
    return answer


def _aspect_pairs(body: str) -> list[tuple[str, str]] | None:
    tags = list(TAG.finditer(body))
    if not tags or body[: tags[0].start()].strip():
        return None
    pairs: list[tuple[str, str]] = []
    for i, tag in enumerate(tags):
        content = body[tag.end(): tags[i + 1].start() if i + 1 < len(tags) else len(body)].strip()
        if not content:
            return None
        pair = (" ".join(tag.group(1).lower().split()), content)
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def _fail(answer: ParsedAnswer, reason: str) -> ParsedAnswer:
    answer.error = reason
    answer.slots = {}
    answer.aspects = []
    return answer
