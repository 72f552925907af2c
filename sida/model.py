"""The SIDA network as the official code builds it (hzlsaber/SIDA ``model/SIDA.py`` on LISA / LLaVA v1).

Parts: a CLIP vision tower (transformers ``CLIPVisionModel``, layer ``select_layer`` patch
tokens), a single ``nn.Linear`` projector (LLaVA v1), a ``LlamaForCausalLM`` (optionally with
peft LoRA on q_proj/v_proj), SAM from ``segment_anything`` (frozen ViT image encoder, prompt
encoder fed the [SEG] embedding as its only sparse token, one-output mask decoder) and the
SIDA heads:

- ``cls_head``: Linear(H, H/2) → ReLU → Dropout(0) → Linear(H/2, 3) (label order 0 real,
  1 full synthetic, 2 tampered);
- ``text_hidden_fcs``: Linear(H, H) → ReLU → Linear(H, 256) → Dropout(0);
- ``sida_fc1``: Linear(3, 256) on the detection LOGITS (official) or Linear(H, 256) on the <DET>
  hidden state (``fc_input="hidden"``, the paper's reading);
- ``attention_layer``: MultiheadAttention(256, 8, batch_first) with query = the projected detection
  feature and key = value = the sample's [SEG] embeddings, added residually. With ONE [SEG] the
  softmax weight is 1, so the output is ``out_proj(v_proj(seg))`` whatever the query: the
  detection result cannot change the mask (measured on the official code, reproduced here).

LISA (:class:`~sida.config.LisaConfig`, ``has_detection_head`` False) is the same network without
``cls_head``, ``sida_fc1`` and ``attention_layer`` and without [CLS]: ``text_hidden_fcs`` of the
[SEG] state is SAM's sparse prompt as it is (LISA ``model/LISA.py``).

Hidden-state rule (LISA's offset rule): the state used for a token t ([CLS] or [SEG]) is the
LAST-layer state one position BEFORE t in the sequence in which the 256 image features replace
``<image>``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from sida.batch import IGNORE_INDEX, IMAGE_TOKEN_INDEX, SidaBatch, SidaOutput, SpecialTokenIds
from sida.config import SAM_MEAN, SAM_STD, SidaConfig
from sida.fixed_embedding import set_dct_patch_embeddings


def build_clip_tower(cfg: SidaConfig) -> CLIPVisionModel:
    c = cfg.clip
    config = CLIPVisionConfig(
        hidden_size=c.hidden_size, intermediate_size=c.intermediate_size, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, image_size=c.image_size, patch_size=c.patch_size,
        hidden_act="quick_gelu", projection_dim=768,
    )
    config._attn_implementation = "eager"
    return CLIPVisionModel(config)


def build_llm(cfg: SidaConfig, vocab_size: int) -> LlamaForCausalLM:
    c = cfg.llm
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
    )
    config._attn_implementation = "eager"
    return LlamaForCausalLM(config)


def build_sam(cfg: SidaConfig) -> Sam:
    s = cfg.sam
    e = s.embedding_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=s.encoder_depth, embed_dim=s.encoder_dim, img_size=s.image_size, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=s.encoder_heads, patch_size=s.patch_size,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=s.global_attn_indexes,
            window_size=s.window_size, out_chans=s.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=s.prompt_dim, image_embedding_size=(e, e),
            input_image_size=(s.image_size, s.image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=s.decoder_depth, embedding_dim=s.prompt_dim,
                                          mlp_dim=s.decoder_mlp_dim, num_heads=s.decoder_heads),
            transformer_dim=s.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=s.iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_MEAN),
        pixel_std=list(SAM_STD),
    )


def token_state_positions(input_ids: torch.Tensor, token_id: int, num_image_tokens: int) -> list[torch.Tensor]:
    """Per row, the indices in the EXPANDED sequence of the states used for ``token_id``.

    A token at index p of ``input_ids`` sits at p + (num_image_tokens - 1) · (#<image> before p)
    after the image features replace ``<image>``; its state is the one before it (index - 1).
    With one ``<image>`` before the token this equals LISA's rule
    ``cat(zeros(255), input_ids[:, 1:] == id, zeros(1))``.
    """
    out = []
    for row in input_ids:
        is_image = (row == IMAGE_TOKEN_INDEX).long()
        shift = (num_image_tokens - 1) * (torch.cumsum(is_image, 0) - is_image)
        p = torch.nonzero(row == token_id, as_tuple=False).flatten()
        out.append(p + shift[p] - 1)
    return out


class SidaModel(nn.Module):
    """SIDA: CLIP + projector + LLaMA (+ LoRA) + SAM + detection/segmentation heads.

    Args:
        config: sizes and switches (:mod:`sida.config`).
        tokens: ids of the added tokens in the tokenizer this model is used with.
        vocab_size: the tokenizer's length (embeddings are sized to it).
    """

    def __init__(self, config: SidaConfig, tokens: SpecialTokenIds, vocab_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokens = tokens
        h, out_dim = config.llm.hidden_size, config.out_dim
        self.vision_tower = build_clip_tower(config)
        self.mm_projector = nn.Linear(config.clip.hidden_size, h)
        self.lm: nn.Module = build_llm(config, vocab_size or config.llm.vocab_size)
        self.visual_model = build_sam(config)
        self.text_hidden_fcs = nn.ModuleList(
            [nn.Sequential(nn.Linear(h, h), nn.ReLU(inplace=True), nn.Linear(h, out_dim), nn.Dropout(0.0))]
        )
        if config.has_detection_head:  # LISA (LisaConfig) has none of these three
            self.cls_head = nn.ModuleList(
                [nn.Sequential(nn.Linear(h, h // 2), nn.ReLU(), nn.Dropout(0.0), nn.Linear(h // 2, config.num_classes))]
            )
            fc_in = config.num_classes if config.fc_input == "logits" else h
            self.sida_fc1 = nn.Linear(fc_in, out_dim)
            self.attention_layer = nn.MultiheadAttention(embed_dim=out_dim, num_heads=8, batch_first=True)
        self.lora_enabled = False
        if config.dct_patch_gains is not None:
            set_dct_patch_embeddings(self, *config.dct_patch_gains)

    # ------------------------------------------------------------------ set-up helpers
    def add_lora(self) -> None:
        """Wrap the language model with peft LoRA (r, α, dropout, targets from ``config.lora``)."""
        from peft import LoraConfig, get_peft_model

        lc = self.config.lora
        self.lm = get_peft_model(
            self.lm, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                target_modules=list(lc.targets), bias="none")
        )
        self.lora_enabled = True

    def merge_lora(self) -> None:
        """Fold LoRA into the base weights (what the official merge script saves)."""
        if self.lora_enabled:
            self.lm = self.lm.merge_and_unload()  # type: ignore[operator]
            self.lora_enabled = False

    def set_official_trainable(self) -> list[str]:
        """requires_grad as train_SIDA.py: LoRA, embed_tokens, mask decoder, heads, fc1, attention.

        CLIP, projector, SAM image/prompt encoders, lm_head and the LLaMA base weights stay frozen.
        Returns the names of the trainable parameters.
        """
        trainable_parts = ("lora_", "embed_tokens", "visual_model.mask_decoder", "text_hidden_fcs",
                           "cls_head", "sida_fc1", "attention_layer")
        names = []
        for name, p in self.named_parameters():
            p.requires_grad = any(part in name for part in trainable_parts)
            if p.requires_grad:
                names.append(name)
        return names

    @property
    def llama(self) -> LlamaForCausalLM:
        """The bare ``LlamaForCausalLM`` (under the peft wrapper when LoRA is on)."""
        return self.lm.get_base_model() if self.lora_enabled else self.lm  # type: ignore[operator,return-value]

    # ------------------------------------------------------------------ pieces of the forward
    def image_features(self, images_clip: torch.Tensor) -> torch.Tensor:
        """(B, 3, C, C) → (B, 256, H): CLIP ``select_layer`` patch tokens (C 224; 96 tiny) through the projector."""
        with torch.no_grad():
            out = self.vision_tower(pixel_values=images_clip, output_hidden_states=True)
            feats = out.hidden_states[self.config.clip.select_layer][:, 1:]
        return self.mm_projector(feats)

    def embed(self, batch: SidaBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Token embeddings with each ``<image>`` replaced by the 256 image features.

        Returns (inputs_embeds (B, L', H), attention_mask (B, L'), labels (B, L') or None); the
        image positions are attended to and never supervised.
        """
        ids = batch.input_ids
        n_img = self.config.clip.num_patches
        emb_layer = self.llama.get_input_embeddings()
        tok = emb_layer(ids.clamp(min=0))
        feats = self.image_features(batch.images_clip).to(tok.dtype)
        rows_e, rows_m, rows_l = [], [], []
        for b in range(ids.shape[0]):
            where = torch.nonzero(ids[b] == IMAGE_TOKEN_INDEX, as_tuple=False).flatten().tolist()
            if len(where) != 1:
                raise ValueError(f"sample {b}: expected one <image> token (id {IMAGE_TOKEN_INDEX}), found {len(where)}")
            p = where[0]
            rows_e.append(torch.cat([tok[b, :p], feats[b], tok[b, p + 1:]]))
            m = batch.attention_mask[b].long()
            rows_m.append(torch.cat([m[:p], m.new_ones(n_img), m[p + 1:]]))
            if batch.labels is not None:
                lab = batch.labels[b]
                rows_l.append(torch.cat([lab[:p], lab.new_full((n_img,), IGNORE_INDEX), lab[p + 1:]]))
        labels = torch.stack(rows_l) if rows_l else None
        return torch.stack(rows_e), torch.stack(rows_m), labels

    def detection_query(self, cls_logits: torch.Tensor, cls_hidden: torch.Tensor) -> torch.Tensor:
        """h̃_det = sida_fc1(logits) (official) or sida_fc1(h_det) (paper reading); (B, 256)."""
        return self.sida_fc1(cls_logits if self.config.fc_input == "logits" else cls_hidden)

    def fuse(self, seg: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Det→seg interaction for one sample: seg (n, 256), query (256,) → (n, 256).

        ``official``: seg + MHA(q=query, k=v=seg); ``fc``: seg + query (the FC-projected detection
        feature added to each [SEG] embedding, our reading of Table 6's "FC"); ``none``: seg.
        """
        mode = self.config.attention
        if mode == "none":
            return seg
        if mode == "fc":
            return seg + query[None]
        attn, _ = self.attention_layer(query=query[None, None], key=seg[None], value=seg[None], need_weights=False)
        return seg + attn[0]

    def decode_masks(self, image: torch.Tensor, prompts: torch.Tensor, resize: tuple[int, int],
                     size: tuple[int, int]) -> torch.Tensor:
        """One image (3, S, S) and n prompt embeddings (n, 256) → (n, H, W) mask logits at ``size``."""
        sam = self.visual_model
        with torch.no_grad():
            image_emb = sam.image_encoder(image[None])
        sparse = prompts[:, None, :]
        e = sam.prompt_encoder.image_embedding_size
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(prompts.shape[0], -1, e[0], e[1])
        low_res, _ = sam.mask_decoder(
            image_embeddings=image_emb, image_pe=sam.prompt_encoder.get_dense_pe().to(prompts.dtype),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense.to(prompts.dtype),
            multimask_output=False,
        )
        dtype = low_res.dtype
        masks = F.interpolate(low_res.float(), (sam.image_encoder.img_size,) * 2, mode="bilinear", align_corners=False)
        masks = masks[..., : resize[0], : resize[1]]
        masks = F.interpolate(masks, tuple(size), mode="bilinear", align_corners=False)
        return masks[:, 0].to(dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: SidaBatch, *, mask_for: list[bool] | Callable[[torch.Tensor], list[bool]] | None = None,
                return_lm_logits: bool = False) -> SidaOutput:
        """Run SIDA on a batch (see :class:`~sida.batch.SidaBatch` for the conventions).

        Args:
            batch: the inputs.
            mask_for: per sample, whether to run SAM for its [SEG] tokens (default: every sample
                that has one), or a function of the (B, 3) detection logits that returns that list
                (inference: SAM runs only for the images whose predicted class asks for a mask).
            return_lm_logits: also return the LM logits over the expanded sequence.
        """
        embeds, attn, labels = self.embed(batch)
        out = self.lm(inputs_embeds=embeds, attention_mask=attn, labels=labels, output_hidden_states=True)
        last = out.hidden_states[-1]
        n_img = self.config.clip.num_patches
        bsz = last.shape[0]
        seg_pos = token_state_positions(batch.input_ids, self.tokens.seg, n_img)
        if self.config.has_detection_head:
            cls_pos = token_state_positions(batch.input_ids, self.tokens.cls, n_img)  # type: ignore[arg-type]
            has_cls = torch.tensor([len(p) > 0 for p in cls_pos], device=last.device)
            idx = torch.stack([p[-1] if len(p) else p.new_zeros(()) for p in cls_pos])
            cls_hidden = last[torch.arange(bsz, device=last.device), idx.to(last.device)]
            cls_logits = self.cls_head[0](cls_hidden)
            cls_logits = torch.where(has_cls[:, None], cls_logits, torch.full_like(cls_logits, float("nan")))
            query: torch.Tensor | None = self.detection_query(torch.nan_to_num(cls_logits), cls_hidden)
        else:  # LISA: no [CLS], no detection logits, [SEG] embeddings go to SAM unchanged
            has_cls = torch.zeros(bsz, dtype=torch.bool, device=last.device)
            cls_logits = last.new_zeros((bsz, 0))
            query = None

        if callable(mask_for):
            wanted = mask_for(cls_logits.detach())
        else:
            wanted = mask_for if mask_for is not None else [len(p) > 0 for p in seg_pos]
        pred_masks, seg_embeddings = [], []
        for b in range(bsz):
            size = tuple(batch.mask_sizes[b])
            if not wanted[b] or len(seg_pos[b]) == 0:
                pred_masks.append(last.new_zeros((0, *size)))
                seg_embeddings.append(last.new_zeros((0, self.config.out_dim)))
                continue
            if query is not None and not bool(has_cls[b]):
                raise ValueError(f"sample {b} has a [SEG] token but no [CLS] before it")
            seg = self.text_hidden_fcs[0](last[b, seg_pos[b].to(last.device)])
            enhanced = self.fuse(seg, query[b]) if query is not None else seg
            seg_embeddings.append(enhanced)
            pred_masks.append(self.decode_masks(batch.images_sam[b], enhanced, tuple(batch.resize_sizes[b]), size))
        return SidaOutput(
            cls_logits=cls_logits, has_cls=has_cls, pred_masks=pred_masks, seg_embeddings=seg_embeddings,
            lm_loss=out.loss if labels is not None else None,
            lm_logits=out.logits if return_lm_logits else None,
        )

    @torch.no_grad()
    def greedy_generate(self, batch: SidaBatch, max_new_tokens: int, stop_ids: tuple[int, ...]) -> list[list[int]]:
        """Greedy continuation of each (unpadded, batch size 1 per call is typical) prompt.

        As the official ``evaluate`` (greedy, no KV cache). Returns the new token ids per sample,
        without the stop token.
        """
        results = []
        for b in range(batch.batch_size):
            n = int(batch.attention_mask[b].long().sum())
            ids = batch.input_ids[b : b + 1, :n]
            single = SidaBatch(batch.images_sam[b : b + 1], batch.images_clip[b : b + 1], ids,
                               torch.ones_like(ids), [batch.resize_sizes[b]], [batch.mask_sizes[b]])
            embeds, attn, _ = self.embed(single)
            emb_layer = self.llama.get_input_embeddings()
            new: list[int] = []
            for _ in range(max_new_tokens):
                logits = self.lm(inputs_embeds=embeds, attention_mask=attn).logits[0, -1]
                nxt = int(torch.argmax(logits))
                if nxt in stop_ids:
                    break
                new.append(nxt)
                step = emb_layer(torch.tensor([[nxt]], device=embeds.device)).to(embeds.dtype)
                embeds = torch.cat([embeds, step], dim=1)
                attn = torch.cat([attn, attn.new_ones((1, 1))], dim=1)
            results.append(new)
        return results
