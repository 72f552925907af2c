"""Seconds per image of one detector's full test path (preprocess + forward, random weights) at a
given image size on CPU, as documented in docs/baselines.md. Usage::

    python -m bench.perf.cost_per_image --model gram_net --model fusing --size 1024 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.plugins import create_model


def seconds_per_image(spec: str, size: int, repeats: int) -> tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of ``predict`` on one random ``size``×``size`` RGB
    image. CPU seconds are summed over threads: on a loaded machine they stay meaningful when the
    wall clock does not."""
    model = create_model(spec)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    model.predict([image])  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        model.predict([image])
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME[:CONFIG]; repeatable")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024, SID-Set)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for spec in args.model:
        wall, cpu = seconds_per_image(spec, args.size, args.repeats)
        print(f"{spec}: {wall:.2f} s/image wall ({cpu:.2f} CPU-s) at {args.size}x{args.size} px, "
              f"{args.threads} thread(s)")


if __name__ == "__main__":
    main()
