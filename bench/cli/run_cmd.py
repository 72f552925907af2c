"""``sida-bench run PROTOCOL --model NAME[:CONFIG] [--weights PATH] [--data-root D=PATH] --out DIR [--shard I/K]``.

Also under ``torchrun --nproc-per-node K -m bench.cli run ...``: each rank predicts its share of
the samples and rank 0 scores (see :mod:`bench.evaluation.sharding`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import add_model_args, parse_data_roots, parse_model_options
from bench.errors import UserError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run a protocol with a model and write results",
                       description="Predict every sample × perturbation of PROTOCOL into DIR/predictions "
                                   "(resumable parquet store), then write DIR/results.json and DIR/tables/.")
    p.add_argument("protocol", help="bundled protocol name (sida-bench list protocols) or a YAML path")
    add_model_args(p)
    p.add_argument("--data-root", action="append", metavar="DATASET=PATH", help="where a dataset lives (repeatable)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate N samples of each split, evenly spaced through the dataset's order (every class kept)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="inference batch size (default: 8)")
    p.add_argument("--workers", type=int, default=0, metavar="W",
                   help="DataLoader worker processes for decoding and preprocessing (default: 0 = in process)")
    p.add_argument("--resume", action="store_true", help="continue a run in DIR, skipping stored predictions")
    p.add_argument("--flush-every", type=int, default=256, metavar="K",
                   help="rows per prediction shard; a killed run loses at most K-1 rows (default: 256)")
    p.add_argument("--shard", metavar="I/K",
                   help="predict only shard I of K (0-based; samples split by sample id), e.g. one Slurm array task; "
                        "the last shard to finish scores (default: all samples, or the torchrun rank)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.cli.compose import run_and_score
    from bench.evaluation.protocol import load_protocol
    from bench.evaluation.runner import check_data_roots
    from bench.evaluation.sharding import init_distributed, parse_shard, torchrun_shard

    shard = parse_shard(args.shard) if args.shard else None
    if shard is not None and torchrun_shard() is not None:
        raise UserError("--shard and torchrun both split the samples; use one of them")
    if torchrun_shard() is not None:
        init_distributed(args.device)  # before the model is placed: each rank on its own GPU
    protocol = load_protocol(args.protocol)
    roots = parse_data_roots(args.data_root)
    check_data_roots(protocol, roots)
    options = parse_model_options(args.option)
    results = run_and_score(  # the model is created after the datasets are listed
        protocol, args.model, args.out, weights=args.weights, device=args.device, model_options=options,
        allow_pickle=args.allow_pickle, data_roots=roots, limit=args.limit,
        batch_size=args.batch_size, workers=args.workers, resume=args.resume, flush_every=args.flush_every,
        shard=shard,
    )
    if results is None:
        if shard is None:
            print(f"{args.out}: rank {torchrun_shard()} stored; rank 0 scored the run")
        else:
            print(f"{args.out}: shard {shard} stored; the last shard to finish scores the run "
                  f"(or, once all are done: sida-bench score {args.out} --out {args.out})")
        return 0
    n = sum(e.n for e in results.entries)
    errors = sum(e.n_errors for e in results.entries)
    print(f"{args.out / 'results.json'}: {len(results.entries)} result groups, {n} predictions, {errors} errors")
    return 0
