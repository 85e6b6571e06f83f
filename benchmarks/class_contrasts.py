"""Throughput of the pairwise contrast classifiers: batched tensor program vs one pair at a time.

Class contrasting trains one logistic classifier (one linear layer with bias, sigmoid, full-batch
SGD, lr 0.01, 100 epochs) per ordered class pair on the classes' strongly attributed layer
positions. Two ways to train the same classifiers on the same synthetic positions:

  batched   train_pairwise_classifiers: every epoch of a block of pairs is two batched matrix
            products (closed-form gradient of the mean binary cross-entropy)
  loop      train_pair_loop once per pair: nn.Linear + BCEWithLogitsLoss + torch.optim.SGD

Prints pairs/s of both, the speed-up, the largest difference between their weights, and the
projected time for all 999,000 ordered pairs of 1,000 classes at these sizes, beside the
paper's 35 h on one RTX 2080 Ti.

    .venv/bin/python benchmarks/class_contrasts.py [--channels 128] [--positions 800]
        [--classes 24] [--loop-pairs 24] [--pairs-per-batch 64]

Defaults are the embedded world's CNN at layer4 (128 channels, ~800 kept positions per class);
`--channels 2048 --positions 4000` is closer to ResNet-50 layer4.2 on ImageNet.
"""

from __future__ import annotations

import argparse
import time

import torch

from www_assets.methods.class_concepts import train_pair_loop, train_pairwise_classifiers

PAPER_HOURS = 35.0
ALL_PAIRS_1000 = 1000 * 999


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--positions", type=int, default=800, help="kept positions per class")
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--loop-pairs", type=int, default=24, help="pairs timed in the one-pair loop")
    parser.add_argument("--pairs-per-batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()

    torch.manual_seed(0)
    centres = torch.rand(args.classes, args.channels) * 2
    by_class = [torch.relu(centres[c] + torch.randn(args.positions, args.channels)) for c in range(args.classes)]
    pairs = [(a, b) for a in range(args.classes) for b in range(args.classes) if a != b]
    print(f"{args.classes} classes, {len(pairs)} ordered pairs, {args.positions} positions per class, "
          f"{args.channels} channels, {args.epochs} epochs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    # warm-up: the first optimiser step of a process pays one-off imports and set-up
    train_pair_loop(by_class[0], by_class[1], 2)
    train_pairwise_classifiers(by_class, pairs[:2], 2)
    loop_pairs = pairs[:args.loop_pairs]
    start = time.perf_counter()
    loop = [train_pair_loop(by_class[a], by_class[b], args.epochs) for a, b in loop_pairs]
    loop_rate = len(loop_pairs) / (time.perf_counter() - start)

    start = time.perf_counter()
    batched = train_pairwise_classifiers(by_class, pairs, args.epochs, pairs_per_batch=args.pairs_per_batch)
    batched_rate = len(pairs) / (time.perf_counter() - start)

    diff = max(max(float((batched.weight[i] - w).abs().max()), abs(float(batched.bias[i] - b)))
               for i, (w, b) in enumerate(loop))
    print(f"one pair at a time: {loop_rate:8.1f} pairs/s ({len(loop_pairs)} pairs)")
    print(f"batched:            {batched_rate:8.1f} pairs/s ({len(pairs)} pairs); speed-up {batched_rate / loop_rate:.1f}x")
    print(f"largest difference between the two classifiers' parameters: {diff:.2e}")
    for name, rate in (("one pair at a time", loop_rate), ("batched", batched_rate)):
        hours = ALL_PAIRS_1000 / rate / 3600
        print(f"projected for 1,000 classes ({ALL_PAIRS_1000:,} pairs), {name}: {hours:8.1f} h "
              f"(paper: {PAPER_HOURS:.0f} h on one RTX 2080 Ti)")


if __name__ == "__main__":
    main()
