"""SIDA conversations: llava_v1 template, official strings, image placeholder and label masking."""

import pytest
import torch

from bench.errors import UserError
from sida import prompts
from sida.batch import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from sida.tokenizer import build_tiny_tokenizer, special_token_ids


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer(description=True)


def test_official_strings():
    assert prompts.QUESTION == (
        "<image>\nCan you identify if this image is real, full synthetic, or tampered image? "
        "Please mask the tampered regions if it is tampered."
    )
    assert prompts.QUESTION_DESCRIPTION.endswith("Please mask the tampered regions if it is tampered and answer why.")
    assert [prompts.detection_answer(c) for c in range(3)] == [
        "[CLS] The image is real",
        "[CLS] The image is full synthetic",
        "[CLS] The image is tampered [SEG]",
    ]
    assert prompts.description_answer(2, "Blurred edges.") == "[CLS] The image is tampered [SEG] Blurred edges. [END]"
    assert prompts.description_answer(0, None) == "[CLS] The image is real [END]"


def test_llava_v1_template():
    system = (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions."
    )
    assert prompts.conversation_prompt("Q?", "A.") == f"{system} USER: Q? ASSISTANT: A.</s>"
    assert prompts.conversation_prompt("Q?", None) == f"{system} USER: Q? ASSISTANT:"
    assert prompts.with_image_markers("x <image>\ny") == "x <im_start><image><im_end>\ny"


def test_one_image_placeholder_between_im_start_and_im_end(tok):
    enc = prompts.encode_conversation(tok, prompts.QUESTION, prompts.detection_answer(1))
    ids = enc.input_ids.tolist()
    special = special_token_ids(tok)
    at = ids.index(IMAGE_TOKEN_INDEX)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[at - 1] == special.im_start and ids[at + 1] == special.im_end
    assert ids[-1] == special.eos and ids.count(special.cls) == 1 and special.seg not in ids
    assert (enc.labels == IGNORE_INDEX).all()  # stage 1: no LM supervision


@pytest.mark.parametrize("label", [0, 1, 2])
def test_supervised_labels_cover_exactly_answer_and_eos(tok, label):
    answer = prompts.description_answer(label, "The shadow of the dog points the wrong way.")
    enc = prompts.encode_conversation(tok, prompts.QUESTION_DESCRIPTION, answer, supervise=True)
    kept = enc.labels != IGNORE_INDEX
    first = int(kept.nonzero()[0])
    assert kept[first:].all()  # one contiguous supervised span up to the end
    assert torch.equal(enc.input_ids[kept], enc.labels[kept])
    assert enc.input_ids[first].item() == special_token_ids(tok).cls
    decoded = tok.decode(enc.input_ids[kept].tolist())
    assert decoded.replace(" ", "") == (answer + "</s>").replace(" ", "")


def test_generation_prompt_ends_with_assistant(tok):
    enc = prompts.encode_conversation(tok, prompts.QUESTION, None)
    assert tok.decode(enc.input_ids[-2:].tolist()).replace(" ", "").endswith("ASSISTANT:")
    with pytest.raises(UserError, match="needs an answer"):
        prompts.encode_conversation(tok, prompts.QUESTION, None, supervise=True)


def test_collate_pads_right_and_truncates(tok):
    short = prompts.encode_conversation(tok, prompts.QUESTION, prompts.detection_answer(0), supervise=True)
    answer = prompts.description_answer(2, "x y z")
    long = prompts.encode_conversation(tok, prompts.QUESTION_DESCRIPTION, answer, supervise=True)
    ids, attention, labels = prompts.collate_conversations([short, long], pad_id=0)
    n = len(short.input_ids)
    assert ids.shape == (2, len(long.input_ids)) and attention[0].sum() == n and attention[1].all()
    assert (ids[0, n:] == 0).all() and (labels[0, n:] == IGNORE_INDEX).all()
    ids, attention, labels = prompts.collate_conversations([short, long], pad_id=0, max_length=10)
    assert ids.shape == attention.shape == labels.shape == (2, 10)


def test_bad_label_is_a_user_error():
    with pytest.raises(UserError, match="0 real"):
        prompts.detection_answer(3)
