"""Cost of the frozen extractors of LGrad (StyleGAN discriminator gradient at 256²) and LNP (CycleISP
DenoiseNet at full resolution) on CPU, at SID-Set's typical 1024 px, with random weights (the cost
does not depend on the values).

Prints, per model, seconds per image of the extractor alone and of the whole prediction
(extractor + classifier): wall-clock seconds, and CPU seconds of this process divided by the thread
count, which is close to the wall time on idle cores when the machine is shared (the load average is
printed too). Usage::

    python -m bench.perf.extractor_cost --size 1024 --threads 2 --images 1 [--models lgrad lnp]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from bench.plugins import create_model


def seconds_per_image(fn, images: list[np.ndarray]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per image."""
    wall, cpu = time.perf_counter(), time.process_time()
    for image in images:
        fn(image)
    return (time.perf_counter() - wall) / len(images), (time.process_time() - cpu) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="square image side in pixels (default 1024)")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["lgrad", "lnp"], help="model specs (default: lgrad lnp)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
    print(f"{args.images} image(s) of {args.size}x{args.size}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for spec in args.models:
        model = create_model(spec)
        model.extractor_view(images[0][:64, :64])  # warm-up
        (ext_wall, ext_cpu), (all_wall, all_cpu) = (seconds_per_image(model.extractor_view, images),
                                                    seconds_per_image(lambda im: model.predict([im]), images))
        print(f"{spec:<16} extractor {ext_wall:7.2f} s/image wall, {ext_cpu / args.threads:7.2f} CPU-s/thread   "
              f"extractor + classifier {all_wall:7.2f} s/image wall, {all_cpu / args.threads:7.2f} CPU-s/thread")


if __name__ == "__main__":
    main()
