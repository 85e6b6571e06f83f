"""CLIP text embeddings of a WordNet-sized concept set: each batch cut at its longest prompt vs
every prompt at the full context (77 tokens), same model, same run.

Model: open_clip ViT-B-32 with random weights (`pretrained=None`: the text tower's cost does not
depend on its weights), on the CPU. Texts: what `clip_text_embeddings` encodes for a concept
set, the templated prompt ("a photo of a <noun>") and the raw noun of each concept, plus the
bare template. Concepts: an evenly spaced sample of the 82,115 WordNet 3.0 nouns (nltk; install
with `python -m www_resources.wordnet_setup`); without WordNet, the shipped distractor nouns of
the world (`data/concepts/distractor_nouns.txt`) with numbered variants, and it says so.

The full-context baseline runs on a random sample of the texts (`--baseline-texts`) and is
extrapolated per text; the cut encoding runs on all texts and, for a like-for-like ratio, on the
same sample. Prints texts/s, both ratios, and the largest difference between the two encodings.

    .venv/bin/python benchmarks/text_encoding.py [--concepts 3000] [--baseline-texts 512] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from www_resources.clip import ClipEncoder

REPO = Path(__file__).resolve().parents[1]


def concept_words(count: int) -> tuple[list[str], str]:
    try:
        from www_resources.concept_sets import wordnet_nouns

        nouns = wordnet_nouns()
        step = max(1, len(nouns) // count)
        return list(dict.fromkeys(nouns[::step]))[:count], f"WordNet 3.0 nouns (every {step}th of {len(nouns):,})"
    except Exception as err:  # WordNet not installed for nltk
        base = [w.strip() for w in (REPO / "data/concepts/distractor_nouns.txt").read_text().splitlines() if w.strip()]
        words = [w if i < len(base) else f"{w} {i // len(base)}" for i, w in
                 ((i, base[i % len(base)]) for i in range(count))]
        return words, f"the world's {len(base)} distractor nouns repeated with numbers (WordNet unavailable: {type(err).__name__})"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", type=int, default=3000)
    parser.add_argument("--baseline-texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--template", default="a photo of a {}")
    args = parser.parse_args()

    import open_clip

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None, device="cpu")
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    encoder = ClipEncoder(model.eval(), tokenizer, name="ViT-B-32 (random init)", dim=512, image_size=224,
                          mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD)
    words, source = concept_words(args.concepts)
    texts = [args.template.split("{}")[0].strip()] + [args.template.format(w) for w in words] + words
    tokens = tokenizer(texts)
    lengths = (tokens.argmax(-1) + 1).float()
    print(f"concepts: {len(words):,} from {source}")
    print(f"texts: {len(texts):,} (prompt + raw word per concept, and the bare template); "
          f"tokens per text: mean {lengths.mean():.1f}, max {int(lengths.max())}, context {tokens.shape[1]}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch size {args.batch_size}")

    sample = random.Random(0).sample(range(len(texts)), min(args.baseline_texts, len(texts)))
    sample_texts = [texts[i] for i in sample]
    encoder.encode_texts(sample_texts[:8], batch_size=8)  # warm-up, and the one-off exactness check

    cut_all, t_cut_all = timed(lambda: encoder.encode_texts(texts, batch_size=args.batch_size))
    cut_sample, t_cut_sample = timed(lambda: encoder.encode_texts(sample_texts, batch_size=args.batch_size))

    def full_length():
        out = []
        with torch.no_grad():
            for i in range(0, len(sample_texts), args.batch_size):
                out.append(F.normalize(model.encode_text(tokenizer(sample_texts[i:i + args.batch_size])).float(), dim=-1))
        return torch.cat(out)

    full_sample, t_full_sample = timed(full_length)
    full_rate = len(sample_texts) / t_full_sample
    print()
    print(f"{'encoding':<44}{'texts':>8}{'seconds':>10}{'texts/s':>10}")
    print(f"{'full context (77 tokens), sample':<44}{len(sample_texts):>8,}{t_full_sample:>10.1f}{full_rate:>10.1f}")
    print(f"{'cut at the batch longest prompt, sample':<44}{len(sample_texts):>8,}{t_cut_sample:>10.1f}"
          f"{len(sample_texts) / t_cut_sample:>10.1f}")
    print(f"{'cut at the batch longest prompt, all texts':<44}{len(texts):>8,}{t_cut_all:>10.1f}"
          f"{len(texts) / t_cut_all:>10.1f}")
    print()
    print(f"speed-up on the same sample: {t_full_sample / t_cut_sample:.1f}x")
    print(f"all {len(texts):,} texts: {t_cut_all:.1f} s cut vs {len(texts) / full_rate:.0f} s at full context "
          f"(extrapolated from the sample): {len(texts) / full_rate / t_cut_all:.1f}x")
    gap = float((cut_sample - full_sample).abs().max())
    same = float((cut_all[sample] - full_sample).abs().max())
    print(f"largest |difference| of the unit embeddings, cut vs full: {gap:.2e} (sample), {same:.2e} (all-text run)")


if __name__ == "__main__":
    main()
