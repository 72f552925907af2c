"""SIDA training on the tiny configuration: trainable sets, schedule, a few steps of both stages, resume."""

import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.model import TrainOptions
from bench.plugins import create_model
from bench.types import Sample
from sida.losses import loss_preset
from sida.training import (
    STAGE_TRAINABLE,
    TRAINER_STATE,
    _prepare_model,
    batch_loss,
    make_train_batch,
    trainable_parameter_names,
    warmup_decay_lr,
)


class ListDataset:
    """In-memory dataset with the ``iter_samples`` interface (no ``entries``: held in memory)."""

    def __init__(self, samples, split):
        self.samples, self.split = samples, split

    def __len__(self):
        return len(self.samples)

    def iter_samples(self, shard=0, num_shards=1, skip_ids=frozenset()):
        yield from self.samples


def make_samples(n_per_class, seed=0, size=40):
    rng = np.random.default_rng(seed)
    out = []
    for label in range(3):
        for i in range(n_per_class):
            image = rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
            mask = None
            if label == 2:
                mask = np.zeros((size, size + 8), dtype=bool)
                mask[5:25, 10:30] = True
            meta = {"explanation": f"The region number {i} looks blended."} if i % 2 == 0 else {}
            out.append(Sample(f"{label}/{i}", image, label, mask, meta))
    return out


@pytest.fixture()
def detector():
    torch.manual_seed(0)
    det = create_model("sida:tiny")
    det.ensure_model()
    return det


def test_stage1_trainable_set_is_the_official_list(detector):
    names = _prepare_model(detector, 1)
    assert names == sorted(trainable_parameter_names(detector.net, 1))
    trained = {n for n, p in detector.net.named_parameters() if p.requires_grad}
    assert trained == set(names)
    assert any("lora_A" in n and "q_proj" in n for n in trained)
    assert any("lora_B" in n and "v_proj" in n for n in trained)
    assert not any("k_proj.lora" in n or "o_proj.lora" in n for n in trained)
    official = (
        "embed_tokens", "visual_model.mask_decoder", "text_hidden_fcs", "cls_head", "sida_fc1", "attention_layer"
    )
    for part in official:
        assert any(part in n for n in trained), part
    for frozen in ("lm_head", "vision_tower", "mm_projector", "image_encoder", "prompt_encoder", "q_proj.base_layer"):
        assert not any(frozen in n for n in trained), frozen
    # the model's own helper agrees with the list taken from train_SIDA.py
    assert set(detector.net.set_official_trainable()) == trained


def test_stage2_adds_end_token_and_trains_lm_head(detector):
    vocab = len(detector.tokenizer)
    names = _prepare_model(detector, 2)
    assert len(detector.tokenizer) == vocab + 1 and detector.net.tokens.end == vocab
    assert detector.net.llama.get_input_embeddings().weight.shape[0] == vocab + 1
    assert any("lm_head" in n for n in names) and not any("text_hidden_fcs" in n or "sida_fc1" in n for n in names)
    assert all(any(p in n for p in STAGE_TRAINABLE[2]) for n in names)


def test_warmup_decay_schedule():
    assert warmup_decay_lr(0, 100, 10, 1.0) == 0.0
    assert warmup_decay_lr(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert warmup_decay_lr(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_decay_lr(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert warmup_decay_lr(100, 100, 10, 1.0) == 0.0


@pytest.mark.parametrize("stage", [1, 2])
def test_loss_decreases_on_a_fixed_batch(detector, stage):
    torch.manual_seed(0)
    _prepare_model(detector, stage)
    samples = [s for s in make_samples(2) if s.label == 2] if stage == 1 else make_samples(2)[::2]
    batch = make_train_batch(samples, detector, stage)
    if stage == 2:
        assert (batch.labels != -100).any()
    weights = loss_preset("official", stage)
    params = [p for p in detector.net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3, betas=(0.9, 0.95), weight_decay=0.0)
    detector.net.train()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        terms = batch_loss(detector.net, batch, weights)
        terms.total.backward()
        optimizer.step()
        losses.append(float(terms.total.detach()))
    assert losses[-1] < 0.8 * losses[0]
    if stage == 1:
        assert terms.mask.item() > 0  # tampered batch: the mask loss is in the total
    else:
        assert terms.lm.item() > 0


def test_stage1_fit_writes_checkpoints_and_resumes(detector, tmp_path):
    train, val = ListDataset(make_samples(1), "train"), ListDataset(make_samples(1, seed=1), "validation")
    extra = {"stage": 1, "warmup_steps": 1, "grad_accumulation": 1}
    opts = TrainOptions(out_dir=tmp_path / "run", max_steps=2, batch_size=1, seed=3, extra=extra)
    report = detector.fit(train, val, opts)
    assert report["steps"] == 2 and report["loss_preset"] == "official"
    assert report["recipe"]["loss_preset"] == "official"  # taken from the configuration's preset
    assert {"val_acc", "val_giou", "val_ciou"} <= set(report["history"][-1])
    last = tmp_path / "run" / "last"
    assert (last / "model.safetensors").is_file() and (last / TRAINER_STATE).is_file()
    assert (last / "tokenizer.json").is_file()
    import json

    config = json.loads((last / "config.json").read_text())
    assert config["loss_preset"] == "official" and config["stage"] == 1 and config["step"] == 2
    with pytest.raises(UserError, match="--resume"):
        detector.fit(train, val, opts)
    resumed = create_model("sida:tiny")
    resumed.ensure_model()
    more = TrainOptions(out_dir=tmp_path / "run", max_steps=3, batch_size=1, seed=3, resume=True,
                        extra={"stage": 1, "warmup_steps": 1, "grad_accumulation": 1})
    report = resumed.fit(train, val, more)
    assert report["steps"] == 3 and len(report["history"]) == 2
    loaded = create_model("sida:tiny", weights=tmp_path / "run" / "best")
    assert loaded.predict([make_samples(1)[0].image])[0].probs.shape == (3,)


def test_stage2_fit_on_description_subset(detector, tmp_path):
    train, val = ListDataset(make_samples(3), "train"), ListDataset(make_samples(1, seed=1), "validation")
    report = detector.fit(train, val, TrainOptions(out_dir=tmp_path / "s2", max_steps=1, batch_size=2,
                                                   extra={"stage": 2, "warmup_steps": 0, "grad_accumulation": 1}))
    assert report["train_samples"] == 6 and report["left_out"] == {"without_description": 3}
    assert report["last_loss"]["lm"] > 0 and report["loss_preset"] == "official"


def test_bad_options_are_user_errors(detector, tmp_path):
    train = ListDataset(make_samples(2), "train")
    with pytest.raises(UserError, match="test split"):
        detector.fit(train, ListDataset([], "test"), TrainOptions(out_dir=tmp_path))
    with pytest.raises(UserError, match="Unknown SIDA training option"):
        detector.fit(train, None, TrainOptions(out_dir=tmp_path, extra={"stages": 1}))
    with pytest.raises(UserError, match="preset"):
        detector.fit(train, None, TrainOptions(out_dir=tmp_path, extra={"loss_preset": "lisa"}))


def test_configuration_preset_is_the_training_default(tmp_path):
    paper = create_model("sida:tiny", loss_preset="paper")
    assert paper.config.loss_preset == "paper"
    train = ListDataset(make_samples(1), "train")
    report = paper.fit(train, None, TrainOptions(out_dir=tmp_path / "p", max_steps=1, batch_size=1,
                                                 extra={"stage": 1, "warmup_steps": 0, "grad_accumulation": 1}))
    assert report["loss_preset"] == "paper" and report["recipe"]["loss_preset"] == "paper"
    with pytest.raises(UserError, match="loss_preset"):
        create_model("sida:tiny", loss_preset="lisa")
