"""HINT throughput: batched responsible regions and Shapley estimation vs naive loops (CPU, same run).

Responsible regions: torchvision resnet18 (random init, 24 classes, 64x64 inputs), guided
gradients of the true class at layer4 and the normalised per-position saliency, for a batch of
images in one forward and one backward pass, against one image at a time.

Shapley values (seed 004's estimator) of D neurons for one concept classifier (modified Huber
probability of a linear score) over R positions and M sampled orders of the neurons:

  cumsum    linear_link_shapley: prefix values as cumulative sums along each order
  generic   sampled_shapley: the classifier evaluated on every prefix coalition of every order,
            batched over positions and coalitions (any output function)
  naive     a Python loop over orders x neurons x positions, evaluating the classifier on the
            coalition with and without the neuron (timed on a few orders, extrapolated)

Prints the rate of each (marginal contributions per second, images per second), the speed-ups
and the largest difference between the batched and the naive results on the same orders.

    .venv/bin/python benchmarks/hint.py [--neurons 512] [--positions 1024] [--samples 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision

from www_assets.methods.hint import (
    layer_gradients,
    linear_link_shapley,
    modified_huber_proba,
    position_saliency,
    random_orders,
    sampled_shapley,
)


def regions(model, x, y):
    _, (g,) = layer_gradients(model, model.layer4, x, lambda logits: logits.gather(1, y[:, None]).sum()[None])
    return position_saliency(g)


def naive_shapley(w: np.ndarray, b: float, X: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Per-position mean marginals (R, D) over the given orders, one classifier call per term."""
    R, D = X.shape
    total = np.zeros((R, D))
    for order in orders:
        for k, neuron in enumerate(order):
            coalition = np.zeros(D)
            coalition[order[:k]] = 1
            with_neuron = coalition.copy()
            with_neuron[neuron] = 1
            for r in range(R):
                total[r, neuron] += (float(modified_huber_proba(X[r] * with_neuron @ w + b))
                                     - float(modified_huber_proba(X[r] * coalition @ w + b)))
    return total / len(orders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=512)
    parser.add_argument("--positions", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--naive-orders", type=int, default=1)
    parser.add_argument("--naive-positions", type=int, default=16)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)

    # --- responsible regions
    model = torchvision.models.resnet18(num_classes=24).eval()
    x = torch.randn(args.images, 3, 64, 64)
    y = torch.randint(0, 24, (args.images,))
    regions(model, x[:2], y[:2])  # warm-up
    start = time.perf_counter()
    batched = torch.cat([regions(model, x[i:i + args.batch_size], y[i:i + args.batch_size])
                         for i in range(0, args.images, args.batch_size)])
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    single = torch.cat([regions(model, x[i:i + 1], y[i:i + 1]) for i in range(args.images)])
    t_single = time.perf_counter() - start
    print(f"responsible regions, resnet18 layer4, 64x64, {args.images} images, CPU threads={torch.get_num_threads()}")
    print(f"  batched ({args.batch_size}/pass) {args.images / t_batched:8.1f} images/s")
    print(f"  one image per pass   {args.images / t_single:8.1f} images/s   speed-up {t_single / t_batched:.2f}x   "
          f"max |diff| {(batched - single).abs().max().item():.2e}")

    # --- Shapley values
    rng = np.random.default_rng(0)
    D, R, M = args.neurons, args.positions, args.samples
    w = rng.normal(scale=1 / np.sqrt(D), size=D).astype(np.float32)
    X = np.abs(rng.normal(size=(R, D))).astype(np.float32)
    b = -0.5
    wt, Xt = torch.from_numpy(w), torch.from_numpy(X)
    marginals = M * R * D
    start = time.perf_counter()
    _, per_fast = linear_link_shapley(wt, b, Xt, M, seed=0)
    t_fast = time.perf_counter() - start
    m_generic = max(1, M // 8)
    start = time.perf_counter()
    sampled_shapley(lambda m: modified_huber_proba(m @ wt + b), Xt, m_generic, seed=0)
    t_generic = (time.perf_counter() - start) * M / m_generic
    orders = random_orders(M, D, torch.Generator().manual_seed(0)).numpy()[: args.naive_orders]
    start = time.perf_counter()
    naive = naive_shapley(w, b, X[: args.naive_positions], orders)
    t_naive_part = time.perf_counter() - start
    t_naive = t_naive_part * (M / args.naive_orders) * (R / args.naive_positions)
    _, per_check = linear_link_shapley(wt, b, Xt[: args.naive_positions], args.naive_orders, seed=0)
    print(f"Shapley values, {D} neurons x {R} positions x {M} sampled orders ({marginals:,} marginals)")
    print(f"  cumsum   {marginals / t_fast:14,.0f} marginals/s   {t_fast:8.2f} s")
    print(f"  generic  {marginals / t_generic:14,.0f} marginals/s   {t_generic:8.2f} s (from {m_generic} orders)")
    print(f"  naive    {marginals / t_naive:14,.0f} marginals/s   {t_naive:8.0f} s (from {args.naive_orders} order x "
          f"{args.naive_positions} positions, {t_naive_part:.1f} s)")
    print(f"  cumsum / naive speed-up {t_naive / t_fast:,.0f}x; generic / naive {t_naive / t_generic:,.0f}x; "
          f"max |diff| cumsum vs naive on the same orders {np.abs(per_check.numpy() - naive).max():.2e}")


if __name__ == "__main__":
    main()
