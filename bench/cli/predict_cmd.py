"""``sida-bench predict --model NAME[:CONFIG] [--weights PATH] [--explain] [--json] [--save-mask-npy] --out DIR IMAGE...``.

Works for every model plugin. Per image it writes into ``--out``:
- ``<stem>.json``: the verdict (the most probable class; for a localizer without a detection output,
  from ``LocalizerAsDetector``: p_fake = max of its mask), the class probabilities by name, the
  raw ``logits`` (the model's own head outputs, e.g. one logit with sigmoid = P(fake) for the
  CNNDetection family; ``null`` for a model that exposes none), the label space, the model
  identity, and ``mask_fraction`` (share of pixels with p ≥ 0.5) when a mask was made; or
  ``error`` when the image could not be decoded or predicted;
- ``<stem>_mask.png``: forgery probabilities as 8-bit grey (0 = 0.0, 255 = 1.0), at the image's size;
- ``<stem>_mask.npy`` (``--save-mask-npy``): the same probabilities as float32 (H, W), unrounded;
- ``<stem>_overlay.png``: the image with 50 % red where the probability is ≥ 0.5 (as ``chat.py``);
- ``<stem>_explanation.txt``: the model's text (``--explain``, models that can explain).
A bad image is reported in its JSON and on stderr; the other images are still predicted, and the
exit status is 1 when any image failed. ``--json`` prints each image's record as one JSON line on
stdout (instead of the one-line summary), errors included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.cli.common import add_model_args, parse_model_options
from bench.errors import UserError
from bench.safe_text import path_text, printable


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="predict images: verdict, mask, overlay, explanation")
    add_model_args(p)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--explain", action="store_true", help="also write the model's explanation (models that explain)")
    p.add_argument("--json", action="store_true", help="print each image's record (verdict, probabilities, logits) "
                                                       "as one JSON line on stdout")
    p.add_argument("--save-mask-npy", action="store_true",
                   help="also write the float32 mask as <stem>_mask.npy (the PNG is 8-bit)")
    p.set_defaults(handler=handle)


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, suffixed ``-2``, ``-3`` ... when two images share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = printable(path.stem)  # output files get valid UTF-8 names (\xNN for undecodable bytes)
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        stems.append(stem if count == 1 else f"{stem}-{count}")
    return stems


def handle(args: argparse.Namespace) -> int:
    from bench.decode import DecodeError, decode_image
    from bench.evaluation.runner import detection_adapter
    from bench.figures import overlay
    from bench.plugins import create_model

    options: dict[str, Any] = parse_model_options(args.option)
    model = create_model(args.model, weights=args.weights, device=args.device,
                         allow_pickle=args.allow_pickle, **_explain_option(args, options))
    args.out.mkdir(parents=True, exist_ok=True)
    adapter = detection_adapter(model)  # a localizer's verdict comes from its mask, as in runs
    names = model.label_space.class_names
    identity = {"model": model.name, "config": model.config_name, "weights": model.weights_sha256}
    failures = 0
    for path, stem in zip(args.images, unique_stems(args.images)):
        shown = path_text(path)
        record: dict[str, Any] = {"image": shown, **identity, "label_space": model.label_space.value}
        try:
            image = decode_image(path)
            pred = model.predict([image])[0]
            if pred.error:
                raise ValueError(pred.error)
            if adapter is not None:
                pred = adapter(pred)
        except (DecodeError, ValueError, RuntimeError) as exc:
            failures += 1
            message = printable(str(exc))
            record["error"] = message if shown in message else f"{shown}: {message}"
            print(f"error: {record['error']}", file=sys.stderr)
            _write_json(args.out / f"{stem}.json", record)
            if args.json:
                print(json.dumps(record), flush=True)
            continue
        record["verdict"] = names[pred.predicted_class]
        record["probabilities"] = {n: float(p) for n, p in zip(names, pred.probs)}
        record["logits"] = None if pred.logits is None else [float(v) for v in np.ravel(pred.logits)]
        if pred.mask is not None:
            record["mask_fraction"] = float((pred.mask >= 0.5).mean())
            grey = np.clip(np.round(pred.mask * 255.0), 0, 255).astype(np.uint8)
            Image.fromarray(grey).save(args.out / f"{stem}_mask.png")
            Image.fromarray(overlay(image, pred.mask)).save(args.out / f"{stem}_overlay.png")
            if args.save_mask_npy:
                np.save(args.out / f"{stem}_mask.npy", np.asarray(pred.mask, dtype=np.float32), allow_pickle=False)
                record["mask_npy"] = f"{stem}_mask.npy"
        if pred.text is not None:
            (args.out / f"{stem}_explanation.txt").write_text(pred.text + "\n", encoding="utf-8")
        _write_json(args.out / f"{stem}.json", record)
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            print(f"{shown}: {record['verdict']} " + " ".join(f"{n}={p:.3f}" for n, p in record["probabilities"].items()))
    return 1 if failures else 0


def _explain_option(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    if not args.explain:
        return options
    from bench.model import Capability, parse_model_name
    from bench.plugins import MODELS

    cls = MODELS.get(parse_model_name(args.model)[0])
    if Capability.EXPLAIN not in cls.capabilities:
        raise UserError(f"Model {cls.name!r} cannot explain (capabilities: "
                        f"{', '.join(sorted(c.value for c in cls.capabilities))}); drop --explain")
    return {**options, "explain": True}


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
