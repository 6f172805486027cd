"""Seconds per training step of the seed setup, and how much of it waits for data.

    python benchmarks/train_step.py [--alpha 1.0] [--input-size 224] [--batch-size 32]

MobileNetV2 + the seed's head, backbone frozen (phase 1, as the seed trained),
the full on-the-fly augmentation in the tf.data pipeline. The seed reported
15 s per step of 64 images on a CPU.
"""

from __future__ import annotations

import argparse

from nsfw_mobile.train import seconds_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    seconds, wait = seconds_per_step(args.alpha, args.input_size, args.batch_size, args.steps)
    print(
        f"MobileNetV2 alpha {args.alpha} at {args.input_size}, batch {args.batch_size}: "
        f"{seconds:.3f} s per step (median of {args.steps}), "
        f"{seconds / args.batch_size * 1e3:.1f} ms per image; waiting for data {wait:.1%}"
    )


if __name__ == "__main__":
    main()
