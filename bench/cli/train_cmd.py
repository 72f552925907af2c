"""``sida-bench train --model NAME[:CONFIG] --dataset DATASET --root PATH --out DIR``.

Trains on the ``train`` split with early stopping / model selection on ``validation``
(never on test), through the model plugin's own recipe (:meth:`Detector.fit`). ``--option`` sets
model (construction) options; ``--train-option KEY=VALUE`` sets the recipe's own options
(``TrainOptions.extra``, e.g. SIDA's ``stage=2``), refused unless the model lists the key in
:meth:`Detector.train_option_names`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.cli.common import add_model_args, parse_model_options


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a model with its official recipe")
    add_model_args(p)
    p.add_argument("--dataset", required=True, help="dataset plugin, e.g. sid_set")
    p.add_argument("--root", required=True, type=Path, help="dataset root folder")
    p.add_argument("--out", required=True, type=Path, help="output directory for checkpoints")
    p.add_argument("--num-classes", type=int, choices=(2, 3), help="2 = binary (default for baselines), 3 = ternary")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="validation")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--train-option", action="append", metavar="KEY=VALUE",
                   help="a training-recipe option of the model (repeatable), e.g. stage=2 for sida")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.errors import UserError
    from bench.model import TrainOptions
    from bench.plugins import create_dataset, create_model

    if args.val_split == "test":
        raise UserError("Model selection on the test split is not allowed; use --val-split validation")
    options = parse_model_options(args.option)
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    extra = parse_model_options(args.train_option, flag="--train-option")
    model = create_model(args.model, weights=args.weights, device=args.device,
                         allow_pickle=args.allow_pickle, **options)
    known = model.train_option_names()
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise UserError(f"{args.model} has no training option {unknown[0]!r}; "
                        + (f"known: {', '.join(known)}" if known else "it takes no --train-option"))
    train = create_dataset(args.dataset, root=args.root, split=args.train_split)
    val = create_dataset(args.dataset, root=args.root, split=args.val_split)
    report = model.fit(train, val, TrainOptions(
        out_dir=args.out, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, resume=args.resume, workers=args.workers, extra=extra,
    ))
    json.dump(report, sys.stdout, indent=2, default=str)
    print()
    return 0
