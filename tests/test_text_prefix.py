"""CLIP text encoding at each batch's longest prompt equals the full-context encoding; towers
where that is not exact keep the full length; long encodings report progress."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from www_resources.clip import ClipEncoder, build_clip_model, causal_text_tower

# prompts of very different tokenized lengths, so the sorted batches have different widths
TEXTS = (
    ["a photo of a {}.".format(w) for w in ("dog", "cargo box", "dorsal fin", "snow", "checkered wheel")]
    + ["wheel", "petal", "a", "", "brick road at night under a striped sky with spotted clouds"]
    + ["a photo of a"]
)


def full_context(model, tokenizer, texts):
    """The reference: open_clip's own encode_text on tokens padded to the whole context."""
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)


def world_clip():
    from open_clip.tokenizer import SimpleTokenizer

    from www_resources.world.models import clip_model_config

    torch.manual_seed(0)
    config = clip_model_config(64)
    model = build_clip_model(config).eval()
    return model, SimpleTokenizer(context_length=config["text_cfg"]["context_length"])


def vit_b32():
    import open_clip

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None, device="cpu")
    return model.eval(), open_clip.get_tokenizer("ViT-B-32")


def encoder_of(model, tokenizer):
    return ClipEncoder(model, tokenizer, name="test-clip", dim=model.text_projection.shape[1], image_size=32,
                       mean=[0.5] * 3, std=[0.25] * 3)


@pytest.mark.parametrize("build", [world_clip, vit_b32], ids=["world-clip", "ViT-B-32"])
def test_prefix_encoding_equals_the_full_context(build):
    model, tokenizer = build()
    tower, reason = causal_text_tower(model)
    assert tower is not None, reason
    tokens = tokenizer(TEXTS)
    lengths = tower.lengths(tokens)
    # by hand: the end-of-text token (49407, the highest id) ends each text; nothing after it counts
    assert lengths.tolist() == [int((row == 49407).nonzero()[0]) + 1 for row in tokens]
    assert int(lengths.max()) < tokens.shape[1] // 2  # so the test really cuts most of the context

    encoder = encoder_of(model, tokenizer)
    got = encoder.encode_texts(TEXTS, batch_size=4)
    assert encoder._prefix_tower() is not None  # the encoder took the prefix path
    expected = full_context(model, tokenizer, TEXTS)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)
    # one batch cut at a single prompt's length gives that prompt's full-context embedding too
    single = tower.encode(tokens[:1, :int(lengths[0])])
    torch.testing.assert_close(F.normalize(single, dim=-1), expected[:1], atol=2e-6, rtol=0)


def test_cutting_inside_a_prompt_would_change_it():
    """The check above could not pass by accident: dropping the end-of-text token changes the result."""
    model, tokenizer = world_clip()
    tower, _ = causal_text_tower(model)
    tokens = tokenizer(["a photo of a cargo box."])
    length = int(tower.lengths(tokens)[0])
    cut = F.normalize(tower.encode(tokens[:, :length - 1]), dim=-1)
    assert (cut - full_context(model, tokenizer, ["a photo of a cargo box."])).abs().max() > 1e-3


def test_towers_where_cutting_is_not_exact_keep_the_full_length(caplog):
    model, tokenizer = world_clip()
    # a bidirectional tower: later tokens reach earlier ones, so padding matters
    model.attn_mask = torch.zeros_like(model.attn_mask)
    tower, reason = causal_text_tower(model)
    assert tower is None and "not causal" in reason
    encoder = encoder_of(model, tokenizer)
    with caplog.at_level(logging.INFO):
        got = encoder.encode_texts(TEXTS, batch_size=4)
    assert "full context length" in caplog.text
    torch.testing.assert_close(got, full_context(model, tokenizer, TEXTS), atol=2e-6, rtol=0)

    model, _ = world_clip()
    model.text_pool_type = "last"  # pooled at the last position: the padding is what it reads
    assert causal_text_tower(model)[0] is None
    assert causal_text_tower(torch.nn.Linear(2, 2))[0] is None


def test_long_encodings_log_done_total_and_rate(caplog):
    model, tokenizer = world_clip()
    encoder = encoder_of(model, tokenizer)
    seen = []
    texts = [f"a photo of a thing number {i}." for i in range(40)]
    encoder.encode_texts(texts, batch_size=16, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(16, 40), (32, 40), (40, 40)]
    with caplog.at_level(logging.INFO):
        encoder.encode_texts([f"noun {i}" for i in range(2048)], batch_size=512)
    lines = [r.getMessage() for r in caplog.records if "text embeddings" in r.getMessage()]
    assert lines and lines[-1].startswith("test-clip: text embeddings: 2048/2048 (") and lines[-1].endswith("/s)")
