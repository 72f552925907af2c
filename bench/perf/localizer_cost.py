"""Seconds per image of the localization baselines on CPU (random weights: the cost does not
depend on the weight values). Prints one line per model: construction time, then the median
``predict`` wall time and process CPU time over ``--repeats`` runs of one image of ``--size``
pixels. On a shared machine the CPU time (all threads) is the steadier figure: with T dedicated
threads the wall time lies between CPU/T and CPU.

Usage::

    python -m bench.perf.localizer_cost --threads 2 --size 512x512 mvss_net hifi_net:loc_ce trufor

(``hifi_net`` itself needs the official centre file for its distance rule; ``loc_ce`` does not.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench.plugins import create_model


def cost(spec: str, size: tuple[int, int], repeats: int) -> tuple[float, float, float]:
    """(construction seconds, median wall and CPU seconds per image) of ``spec`` on one random RGB image."""
    start = time.perf_counter()
    model = create_model(spec)
    built = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    model.predict([image])  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.predict([image])
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return built, statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="NAME[:CONFIG] of each model to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="512x512", help="image HxW (default 512x512)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    for spec in args.models:
        built, wall, cpu = cost(spec, (h, w), args.repeats)
        print(f"{spec}: built in {built:.1f} s; {wall:.2f} s/image wall, {cpu:.2f} s CPU at {h}x{w} "
              f"on {args.threads} threads")


if __name__ == "__main__":
    main()
