"""SIDA's tokenizer: a LLaMA tokenizer with the tokens the official code adds.

Official order (``train_SIDA.py``): ``pad = unk``, then ``[CLS]`` (the paper's <DET>), ``[SEG]``,
then ``<im_start>``/``<im_end>`` as special tokens; the description stage adds ``[END]``.
Token ids are always read from the tokenizer, never hard-coded (they depend on the base vocabulary).
LISA (``cls=False`` below) adds ``[SEG]``, ``<im_start>``, ``<im_end>`` only (``train_ds.py``).

Whitespace: the official code ran transformers 4.31's slow LLaMA tokenizer, which strips the
whitespace around added tokens and gives every text chunk between them sentencepiece's dummy
prefix ("▁"). We reproduce that with ``AddedToken(lstrip=True, rstrip=True)`` and ``legacy=True``
(Metaspace ``prepend_scheme="always"``).

Two sources:
- :func:`build_tiny_tokenizer`: a 1,000-piece sentencepiece BPE model (unk 0, bos 1, eos 2, byte
  fallback) trained offline on text generated here (SID-Set prompts, answers, description-like
  sentences and docstrings of the Python standard library); the same bytes on every build.
- :func:`load_tokenizer`: a released checkpoint's tokenizer directory (``tokenizer.json``, or a
  sentencepiece ``tokenizer.model`` with ``added_tokens.json`` as transformers 4.31 saved it).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import random
import warnings
from pathlib import Path

import sentencepiece as spm
from tokenizers import AddedToken
from transformers import LlamaTokenizer, PreTrainedTokenizerBase
from transformers.tokenization_utils_base import generate_merges

from bench.errors import UserError
from sida.batch import SpecialTokenIds

CLS_TOKEN = "[CLS]"
SEG_TOKEN = "[SEG]"
END_TOKEN = "[END]"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
TINY_VOCAB_SIZE = 1000
MODEL_MAX_LENGTH = 512

_STDLIB_MODULES = (
    "argparse", "collections", "csv", "dataclasses", "datetime", "functools", "heapq", "itertools",
    "json", "logging", "math", "os", "pathlib", "random", "re", "shutil", "statistics", "string",
    "textwrap", "typing",
)  # fmt: skip
_OBJECTS = ("face", "hand", "sky", "car", "tree", "building", "dog", "cat", "person", "window", "road", "shadow")
_CUES = (
    "The lighting on the {o} is inconsistent with the rest of the scene.",
    "The edges around the {o} look blurred and do not blend with the background.",
    "The texture of the {o} is unnaturally smooth, a typical artifact of diffusion models.",
    "The {o} shows repeated patterns and distorted details.",
    "The shadow of the {o} points in a different direction than the other shadows.",
    "The colours of the {o} are oversaturated compared with its surroundings.",
    "The {o} has natural noise, consistent perspective and realistic reflections.",
    "There are no visible artifacts; the {o} and the background are coherent.",
)


def _stdlib_docs() -> list[str]:
    texts = []
    with warnings.catch_warnings():  # deprecated aliases (typing.io) warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for module_name in _STDLIB_MODULES:
            texts += _module_docs(module_name)
    return texts


def _module_docs(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    texts = [inspect.getdoc(module) or ""]
    for name in sorted(vars(module)):
        if not name.startswith("_"):
            texts.append(inspect.getdoc(getattr(module, name)) or "")
    return texts


def tiny_corpus() -> list[str]:
    """Deterministic training text for the tiny tokenizer (one sentence per item, about 700 KB)."""
    from sida import prompts  # local import: prompts imports this module's token names

    rng = random.Random(0)
    lines = []
    for label in range(3):
        for question in (prompts.QUESTION, prompts.QUESTION_DESCRIPTION):
            lines += [prompts.conversation_prompt(question, prompts.detection_answer(label))] * 40
    for _ in range(500):
        label = rng.randrange(3)
        description = " ".join(rng.choice(_CUES).format(o=rng.choice(_OBJECTS)) for _ in range(3))
        lines.append(prompts.description_answer(label, description))
    for text in _stdlib_docs():
        lines += [line for line in text.splitlines() if line.strip()]
    return lines


@functools.lru_cache(maxsize=4)
def train_tiny_sentencepiece(vocab_size: int = TINY_VOCAB_SIZE) -> bytes:
    """Serialized sentencepiece BPE model (unk 0, bos 1, eos 2, byte fallback), deterministic."""
    model = bytearray()

    class _Writer:
        def write(self, data: bytes) -> None:
            model.extend(data)

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=_Writer(),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        num_threads=1,
        minloglevel=2,
    )
    return bytes(model)


def tokenizer_from_sentencepiece(
    model: bytes | Path, *, model_max_length: int = MODEL_MAX_LENGTH
) -> LlamaTokenizer:
    """Wrap a sentencepiece BPE model as a transformers LLaMA tokenizer (no protobuf needed).

    The vocabulary keeps the sentencepiece ids; merges are derived from the piece scores.
    Padding is on the right and ``pad = unk`` (official).
    """
    proto = Path(model).read_bytes() if isinstance(model, Path) else model
    sp = spm.SentencePieceProcessor(model_proto=proto)
    ids = range(sp.get_piece_size())
    vocab = {sp.id_to_piece(i): i for i in ids}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in ids}
    reserved = [sp.id_to_piece(i) for i in ids if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)]
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=generate_merges(vocab, scores, skip_tokens=reserved),
        unk_token=sp.id_to_piece(sp.unk_id()),
        bos_token=sp.id_to_piece(sp.bos_id()),
        eos_token=sp.id_to_piece(sp.eos_id()),
        legacy=True,
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=model_max_length,
        padding_side="right",
    )
    tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def _added(token: str, special: bool) -> AddedToken:
    return AddedToken(token, lstrip=True, rstrip=True, normalized=False, special=special)


def add_sida_tokens(
    tokenizer: PreTrainedTokenizerBase, *, description: bool = False, cls: bool = True
) -> SpecialTokenIds:
    """Add SIDA's tokens in the official order (those already present are kept) and return their ids.

    ``cls=False``: LISA's tokens (``train_ds.py``: ``[SEG]``, then ``<im_start>``/``<im_end>``; no ``[CLS]``).
    """
    tokenizer.pad_token = tokenizer.unk_token
    vocab = tokenizer.get_vocab()
    for token in (CLS_TOKEN, SEG_TOKEN) if cls else (SEG_TOKEN,):
        if token not in vocab:
            tokenizer.add_tokens(_added(token, special=False))
    missing = [t for t in (IM_START_TOKEN, IM_END_TOKEN) if t not in vocab]
    if missing:
        tokenizer.add_tokens([_added(t, special=True) for t in missing], special_tokens=True)
    if description and END_TOKEN not in vocab:
        tokenizer.add_tokens(_added(END_TOKEN, special=False))
    return special_token_ids(tokenizer, cls=cls)


def special_token_ids(tokenizer: PreTrainedTokenizerBase, *, cls: bool = True) -> SpecialTokenIds:
    """Ids of SIDA's tokens read from ``tokenizer``; ``end`` is None without ``[END]``.

    ``cls=False`` (LISA): ``[CLS]`` is not needed and ``cls`` is None."""
    vocab = tokenizer.get_vocab()
    needed = (CLS_TOKEN, SEG_TOKEN, IM_START_TOKEN, IM_END_TOKEN) if cls else (SEG_TOKEN, IM_START_TOKEN, IM_END_TOKEN)
    missing = [t for t in needed if t not in vocab]
    if missing:
        raise UserError(f"The tokenizer lacks SIDA's tokens {missing}; was it saved by SIDA training?")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise UserError("The tokenizer has no pad/eos token (SIDA uses pad = unk and LLaMA's </s>)")
    return SpecialTokenIds(
        cls=vocab[CLS_TOKEN] if cls else None,
        seg=vocab[SEG_TOKEN],
        im_start=vocab[IM_START_TOKEN],
        im_end=vocab[IM_END_TOKEN],
        pad=int(tokenizer.pad_token_id),
        eos=int(tokenizer.eos_token_id),
        end=vocab.get(END_TOKEN),
    )


def build_tiny_tokenizer(*, description: bool = False, cls: bool = True,
                         model_max_length: int = MODEL_MAX_LENGTH) -> LlamaTokenizer:
    """A fresh tiny LLaMA tokenizer with SIDA's tokens (1,004 ids; 1,005 with ``[END]``; LISA's
    ``cls=False``: 1,003)."""
    tokenizer = tokenizer_from_sentencepiece(train_tiny_sentencepiece(), model_max_length=model_max_length)
    add_sida_tokens(tokenizer, description=description, cls=cls)
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` (reloadable with :func:`load_tokenizer`)."""
    tokenizer.save_pretrained(str(out_dir))


def load_tokenizer(
    path: Path, *, description: bool = False, cls: bool = True, model_max_length: int = MODEL_MAX_LENGTH
) -> PreTrainedTokenizerBase:
    """Load a checkpoint's tokenizer directory (local path) and make sure SIDA's tokens are there.

    Accepts ``tokenizer.json`` (transformers' fast format) or a sentencepiece ``tokenizer.model``
    plus ``added_tokens.json`` (the layout transformers 4.31 wrote for the released checkpoints).
    Added tokens keep their saved ids; a checkpoint without ``[CLS]``/``[SEG]`` gets them appended
    (``cls=False``, LISA: only ``[SEG]``).
    """
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        legacy = config.get("legacy")
        tokenizer = LlamaTokenizer.from_pretrained(
            str(path),
            legacy=True if legacy is None else legacy,
            model_max_length=model_max_length,
            padding_side="right",
        )
    elif (path / "tokenizer.model").is_file():
        tokenizer = tokenizer_from_sentencepiece(path / "tokenizer.model", model_max_length=model_max_length)
        _restore_added_tokens(tokenizer, path / "added_tokens.json")
    else:
        raise UserError(f"No tokenizer.json or tokenizer.model in {path} (expected a SIDA/LISA checkpoint folder)")
    add_sida_tokens(tokenizer, description=description, cls=cls)
    return tokenizer


def _restore_added_tokens(tokenizer: PreTrainedTokenizerBase, added_file: Path) -> None:
    if not added_file.is_file():
        return
    added = json.loads(added_file.read_text())
    for token, token_id in sorted(added.items(), key=lambda item: item[1]):
        if token_id != len(tokenizer):
            raise UserError(
                f"{added_file}: token {token!r} has id {token_id}, but the base vocabulary ends at "
                f"{len(tokenizer) - 1}; the file does not belong to this tokenizer.model"
            )
        special = token in (IM_START_TOKEN, IM_END_TOKEN)
        tokenizer.add_tokens(_added(token, special=special), special_tokens=special)
