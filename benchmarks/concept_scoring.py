"""Benchmark: vectorised WWW concept scoring against a per-neuron loop, and t-vMF scoring.

Default sizes are those of the paper's largest setting: 2,048 neurons (ResNet-50 layer4),
80,000 concepts (WordNet nouns), 40 examples per neuron, 512-d CLIP features, 50,000
candidate views (ImageNet val). Features are random unit vectors (timings do not depend
on the values).

Every measurement runs in a fresh process so that its peak memory is its own: the script
prints wall time and the extra resident memory at peak (VmHWM after minus VmRSS before
the call, Linux /proc; ru_maxrss where /proc is missing).

The naive baseline loops over neurons: per neuron, the (k, M) cosine matrices to the
concepts and to the template, their mean, the threshold and the top-n. A full loop takes
minutes, so it runs on `--naive-neurons` neurons and is extrapolated linearly (marked
"extrapolated"). The same subset checks that both give the same scores.

    .venv/bin/python benchmarks/concept_scoring.py                      # full size
    .venv/bin/python benchmarks/concept_scoring.py --neurons 256 --concepts 10000 --views 5000
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import reset_peak as _reset_peak  # noqa: E402
from benchmarks._measure import rss_kib as _rss_kib  # noqa: E402
from www_assets.methods.concept_scoring import DEFAULT_KAPPA, MAJOR_ALPHA  # noqa: E402


def _make_data(args):
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    views = F.normalize(torch.randn(args.views, args.dim, generator=gen), dim=1)
    concepts = F.normalize(torch.randn(args.concepts, args.dim, generator=gen), dim=1)
    raw = concepts  # scoring with www/www_tvmf never reads the raw words
    template = F.normalize(torch.randn(args.dim, generator=gen), dim=0)
    examples = torch.randint(0, args.views, (args.neurons, args.examples), generator=gen)
    return views, concepts, raw, template, examples


def _naive_www(views, concepts, template, examples, top_n, alpha):
    """Per-neuron loop: (k, M) cosines, mean, threshold, top-n."""
    import torch

    scores, index, selected = [], [], []
    for neuron_examples in examples:
        features = views[neuron_examples]  # (k, d)
        s = (features @ concepts.T - (features @ template).unsqueeze(1)).mean(dim=0)  # (M,)
        best = s.max()
        chosen = (s > alpha * best).nonzero().squeeze(1) if best > 0 else s.new_empty(0, dtype=torch.long)
        top = torch.topk(s, top_n)
        scores.append(top.values)
        index.append(top.indices)
        selected.append(chosen)
    return torch.stack(scores), torch.stack(index), selected


def _naive_tvmf(views, concepts, template, examples, top_n, kappa):
    import torch

    from www_assets.methods.similarity import tvmf as phi_of

    def phi(c):  # the textbook formula, element-wise with temporaries
        return phi_of(c, kappa)

    scores = []
    for neuron_examples in examples:
        features = views[neuron_examples]
        s = (phi(features @ concepts.T) - phi(features @ template).unsqueeze(1)).mean(dim=0)
        scores.append(torch.topk(s, top_n).values)
    return torch.stack(scores)


def _measure(task: str, args, queue) -> None:
    """Runs in a child process: build the data, time one task, report time and memory."""
    import torch

    from www_assets.methods.concept_scoring import ConceptInputs, score_concepts

    views, concepts, raw, template, examples = _make_data(args)
    rss_before = _rss_kib("VmRSS")
    peak_reset = _reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict = {"task": task}
    start = time.perf_counter()
    if task == "www":
        inputs = ConceptInputs(views, examples, concepts, template, raw)
        result = score_concepts("www", inputs, top_n=args.top_n, alpha=args.alpha,
                                memory_budget_bytes=args.budget)
        out["check"] = (result.top_scores[: args.naive_neurons], result.top_index[: args.naive_neurons])
        out["neurons"] = args.neurons
    elif task == "naive_www":
        subset = examples[: args.naive_neurons]
        scores, index, _ = _naive_www(views, concepts, template, subset, args.top_n, args.alpha)
        out["check"] = (scores, index)
        out["neurons"] = len(subset)
    elif task == "www_tvmf":
        subset = examples[: args.tvmf_neurons]
        inputs = ConceptInputs(views, subset, concepts, template, raw)
        result = score_concepts("www_tvmf", inputs, top_n=args.top_n, alpha=args.alpha,
                                kappa=args.kappa, memory_budget_bytes=args.budget)
        out["check"] = (result.top_scores[: args.naive_neurons],)
        out["neurons"] = len(subset)
    elif task == "naive_tvmf":
        subset = examples[: args.naive_neurons]
        out["check"] = (_naive_tvmf(views, concepts, template, subset, args.top_n, args.kappa),)
        out["neurons"] = len(subset)
    elif task == "clip_dissect":
        gen = torch.Generator().manual_seed(1)
        activations = torch.randn(args.views, args.neurons, generator=gen)
        rss_before = _rss_kib("VmRSS")  # the activations are input, not working memory
        peak_reset = _reset_peak()
        start = time.perf_counter()
        inputs = ConceptInputs(views, examples, concepts, template, raw, activations)
        result = score_concepts("clip_dissect", inputs, top_n=args.top_n, memory_budget_bytes=args.budget)
        out["check"] = (result.top_scores[:1],)
        out["neurons"] = args.neurons
    else:  # pragma: no cover
        raise ValueError(task)
    out["seconds"] = time.perf_counter() - start
    peak = _rss_kib("VmHWM") if peak_reset else None
    if peak is not None and rss_before is not None:
        out["extra_peak_mib"] = (peak - rss_before) / 1024
    else:
        out["extra_peak_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before) / 1024
    out["threads"] = torch.get_num_threads()
    # plain numpy arrays: torch tensors would travel as shared memory owned by this process
    out["check"] = tuple(t.numpy() for t in out["check"])
    queue.put(out)


def _run(task: str, args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(task, args, queue))
    process.start()
    out = queue.get()
    process.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--concepts", type=int, default=80_000)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--views", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=MAJOR_ALPHA)
    parser.add_argument("--kappa", type=float, default=DEFAULT_KAPPA)
    parser.add_argument("--budget", type=int, default=1 << 30, help="memory budget in bytes")
    parser.add_argument("--naive-neurons", type=int, default=32,
                        help="neurons the naive loops run on (then extrapolated)")
    parser.add_argument("--tvmf-neurons", type=int, default=256,
                        help="neurons www_tvmf runs on (then extrapolated; 0 = all)")
    parser.add_argument("--clip-dissect", action="store_true",
                        help="also time clip_dissect (soft-WPMI over the top-100 views) at these sizes")
    args = parser.parse_args()
    args.naive_neurons = min(args.naive_neurons, args.neurons)
    args.tvmf_neurons = args.neurons if args.tvmf_neurons <= 0 else min(args.tvmf_neurons, args.neurons)

    import numpy as np
    import torch

    print(f"sizes: N={args.neurons} neurons, M={args.concepts} concepts, k={args.examples} examples, "
          f"V={args.views} views, d={args.dim}; budget {args.budget / 2**20:.0f} MiB; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    www = _run("www", args)
    naive = _run("naive_www", args)
    naive_full = naive["seconds"] * args.neurons / naive["neurons"]
    same_scores = bool(np.allclose(www["check"][0], naive["check"][0], atol=1e-5))
    same_index = bool((www["check"][1] == naive["check"][1]).mean() > 0.99)
    print(f"www (vectorised)        : {www['seconds']:8.2f} s for {www['neurons']} neurons; "
          f"extra peak memory {www['extra_peak_mib']:.0f} MiB")
    label = "measured" if naive["neurons"] == args.neurons else (
        f"extrapolated from {naive['neurons']} neurons ({naive['seconds']:.2f} s)")
    print(f"www (naive neuron loop) : {naive_full:8.2f} s for {args.neurons} neurons, {label}; "
          f"extra peak memory {naive['extra_peak_mib']:.0f} MiB")
    print(f"speed-up www vs naive   : {naive_full / www['seconds']:8.1f}x "
          f"(same top-{args.top_n} on the checked neurons: scores {same_scores}, indices {same_index})")

    tvmf = _run("www_tvmf", args)
    tvmf_full = tvmf["seconds"] * args.neurons / tvmf["neurons"]
    naive_t = _run("naive_tvmf", args)
    naive_t_full = naive_t["seconds"] * args.neurons / naive_t["neurons"]
    label = "measured" if tvmf["neurons"] == args.neurons else (
        f"extrapolated from {tvmf['neurons']} neurons ({tvmf['seconds']:.2f} s)")
    print(f"www_tvmf (chunked)      : {tvmf_full:8.2f} s for {args.neurons} neurons, {label}; "
          f"extra peak memory {tvmf['extra_peak_mib']:.0f} MiB (kappa={args.kappa})")
    same_tvmf = bool(np.allclose(tvmf["check"][0], naive_t["check"][0], atol=1e-5))
    print(f"www_tvmf (naive loop)   : {naive_t_full:8.2f} s for {args.neurons} neurons, extrapolated "
          f"from {naive_t['neurons']} neurons; speed-up {naive_t_full / tvmf_full:.1f}x "
          f"(same top-{args.top_n} scores: {same_tvmf})")

    if args.clip_dissect:
        dissect = _run("clip_dissect", args)
        print(f"clip_dissect            : {dissect['seconds']:8.2f} s for {dissect['neurons']} neurons "
              f"(top-100 views each); extra peak memory {dissect['extra_peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
