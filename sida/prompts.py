"""SIDA's conversations: the llava_v1 template, SID-Set questions/answers and LM label masking.

Everything here follows the official code (``utils/SID_Set.py``, ``utils/SID_Set_description.py``,
``model/llava/conversation.py``, ``model/llava/mm_utils.py``):
- template ``llava_v1``: ``"<system> USER: <question> ASSISTANT: <answer></s>"``;
- ``<image>`` becomes ``<im_start><image><im_end>`` (``mm_use_im_start_end``), and ``<image>`` itself
  becomes ONE ``IMAGE_TOKEN_INDEX`` (-200) in ``input_ids``; the model replaces it with the 256
  projected CLIP patch features (LLaVA's ``tokenizer_image_token``);
- LM labels: ``IGNORE_INDEX`` (-100) on BOS and the instruction; the answer and its ``</s>`` are
  supervised only for samples with a description (stage 1 supervises nothing).
Labels: 0 real, 1 full synthetic, 2 tampered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from bench.errors import UserError
from sida.batch import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from sida.tokenizer import CLS_TOKEN, END_TOKEN, IM_END_TOKEN, IM_START_TOKEN, SEG_TOKEN

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
SEP = " "
SEP2 = "</s>"
IMAGE_TOKEN = "<image>"
IMAGE_PATCHES = 256  # CLIP ViT-L/14 at 224 px: 16 × 16 patch features replace one <image>

QUESTION = (
    f"{IMAGE_TOKEN}\nCan you identify if this image is real, full synthetic, or tampered image? "
    "Please mask the tampered regions if it is tampered."
)
QUESTION_DESCRIPTION = (
    f"{IMAGE_TOKEN}\nCan you identify if this image is real, full synthetic, or tampered image? "
    "Please mask the tampered regions if it is tampered and answer why."
)
CLASS_WORDS = ("real", "full synthetic", "tampered")
LISA_PROMPT = (
    "Can you identify if this image is real, fully synthetic, or tampered? "
    "Please mask the tampered object/part if it is tampered."
)
"""The ``lisa`` plugin's default prompt: the SIDA paper's wording of the segmentation question (§3.2)."""
LISA_ANSWER = f"{SEG_TOKEN}."
"""LISA's teacher-forced answer in its own evaluation (``utils/dataset.py`` ``ValDataset``)."""


def lisa_question(prompt: str) -> str:
    """``"<image>\n" + prompt``, as LISA's ``chat.py`` puts the image before the user's prompt."""
    return f"{IMAGE_TOKEN}\n{prompt}"


def _check_label(label: int) -> int:
    if label not in (0, 1, 2):
        raise UserError(f"SIDA labels are 0 real, 1 full synthetic, 2 tampered; got {label!r}")
    return int(label)


def detection_answer(label: int) -> str:
    """Stage-1 ground-truth answer: ``"[CLS] The image is <class>"`` (+ ``" [SEG]"`` if tampered)."""
    label = _check_label(label)
    answer = f"{CLS_TOKEN} The image is {CLASS_WORDS[label]}"
    return f"{answer} {SEG_TOKEN}" if label == 2 else answer


def description_answer(label: int, description: str | None) -> str:
    """Stage-2 target: ``"[CLS] The image is <class> [SEG]? <description> [END]"``.

    Without a description the official loader still ends the answer with ``[END]``.
    """
    answer = detection_answer(label)
    return f"{answer} {description} {END_TOKEN}" if description else f"{answer} {END_TOKEN}"


def conversation_prompt(question: str, answer: str | None) -> str:
    """llava_v1 ``get_prompt()`` of one round; ``answer=None`` ends with ``"ASSISTANT:"`` (generation)."""
    text = f"{SYSTEM}{SEP}{ROLES[0]}: {question}{SEP}"
    return text + (f"{ROLES[1]}: {answer}{SEP2}" if answer is not None else f"{ROLES[1]}:")


def with_image_markers(text: str) -> str:
    """``<image>`` → ``<im_start><image><im_end>`` (LLaVA v1 with ``mm_use_im_start_end``)."""
    return text.replace(IMAGE_TOKEN, IM_START_TOKEN + IMAGE_TOKEN + IM_END_TOKEN)


def tokenize_with_image(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids with one ``IMAGE_TOKEN_INDEX`` per ``<image>`` and a single leading BOS."""
    chunks = [tokenizer(chunk).input_ids for chunk in text.split(IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    has_bos = bool(chunks[0]) and chunks[0][0] == bos
    ids = [bos] if has_bos else []
    for index, chunk in enumerate(chunks):
        if index:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[1:] if has_bos and chunk and chunk[0] == bos else chunk)
    return ids


def mask_instruction(text: str, input_ids: list[int], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """LM labels for a full conversation: the official rule, with ``IGNORE_INDEX`` on BOS + instruction.

    Per round (split on ``</s>``), the instruction is the text up to ``"ASSISTANT: "``; its length is
    its token count minus 2 (BOS and the trailing "▁" that merges into the answer); each round
    counts its own BOS in place of the ``</s>``. A length mismatch is an error, as in the official code.
    """
    labels = list(input_ids)
    separator = SEP + ROLES[1] + ": "
    cur = 1
    labels[0] = IGNORE_INDEX
    for round_text in text.split(SEP2):
        if not round_text:
            break
        parts = round_text.split(separator)
        if len(parts) != 2:
            raise UserError(f"Conversation round without exactly one {separator!r}: {round_text[:80]!r}")
        round_len = len(tokenize_with_image(round_text, tokenizer))
        instruction_len = len(tokenize_with_image(parts[0] + separator, tokenizer)) - 2
        labels[cur : cur + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur += round_len
    if cur != len(input_ids):
        raise UserError(f"Label masking is out of step with the tokenizer ({cur} vs {len(input_ids)} tokens)")
    return labels


@dataclass(frozen=True)
class EncodedConversation:
    """One tokenized conversation: ``input_ids`` and LM ``labels`` of the same length (1-D long)."""

    text: str
    input_ids: torch.Tensor
    labels: torch.Tensor


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, question: str, answer: str | None, *, supervise: bool = False
) -> EncodedConversation:
    """Build, mark and tokenize a conversation; labels are all ``IGNORE_INDEX`` unless ``supervise``."""
    text = with_image_markers(conversation_prompt(question, answer))
    ids = tokenize_with_image(text, tokenizer)
    if supervise:
        if answer is None:
            raise UserError("A supervised conversation needs an answer")
        labels = mask_instruction(text, ids, tokenizer)
    else:
        labels = [IGNORE_INDEX] * len(ids)
    return EncodedConversation(text, torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))


def collate_conversations(
    items: list[EncodedConversation], pad_id: int, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to (B, L): ``input_ids`` (pad ``pad_id``), ``attention_mask`` (bool), ``labels`` (-100).

    ``max_length`` truncates as the official collate does in training (``model_max_length - 255``,
    the 255 extra positions the image features take). The attention mask comes from the lengths
    (the official ``input_ids != pad`` equals it unless a text contains ``<unk>``).
    """
    if not items:
        raise UserError("Cannot collate an empty batch")
    length = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(items), length), dtype=torch.bool)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        input_ids[row, :n] = item.input_ids
        labels[row, :n] = item.labels
        attention[row, :n] = True
    if max_length is not None and length > max_length:
        input_ids, labels, attention = input_ids[:, :max_length], labels[:, :max_length], attention[:, :max_length]
    return input_ids, attention, labels
