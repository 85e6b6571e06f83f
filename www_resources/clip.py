"""CLIP image and text embeddings, from open_clip by name and tag or from a local checkpoint.

Specs:

    openclip:<model name>?pretrained=<tag>     e.g. openclip:ViT-B-32?pretrained=openai
        open_clip.create_model_and_transforms(name, pretrained=tag). The weights are looked up
        in the local caches first (see www_resources.zoo for the download policy); when they
        are missing, ModelUnavailableError gives the command that fetches them.
        `pretrained=none` builds a randomly initialised model (tests, smoke runs).
    checkpoint:<path.pt>
        A file written by `save_clip_checkpoint` (the world's CLIP trainer uses it):
        {"format": "www-openclip-v1", "model_config": <open_clip model config: embed_dim,
         vision_cfg, text_cfg, ...>, "state_dict": ..., "image_mean": [3 floats],
         "image_std": [3 floats], "image_size": int, "context_length": int}
        read with torch.load(weights_only=True); the model is rebuilt from the config with
        open_clip's model classes, and text is tokenised by open_clip's SimpleTokenizer.

`ClipEncoder` resizes and normalises images itself, so callers hand it raw pixels.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from www_resources.zoo import (
    ModelSpec,
    ModelUnavailableError,
    UnknownArchitectureError,
    download_refusal,
    download_timeout_s,
    hf_cache_dir,
    hf_endpoint,
    hub_offline,
    is_cache_miss,
    quiet_library_errors,
    resolve_checkpoint_path,
    socket_timeout,
    split_spec,
    weights_unavailable,
)

CLIP_SOURCES = ("openclip", "checkpoint")
CLIP_CHECKPOINT_FORMAT = "www-openclip-v1"
CLIP_ACCEPTED_FORMS = (
    "  openclip:<model name>?pretrained=<tag>   e.g. openclip:ViT-B-32?pretrained=openai\n"
    "  checkpoint:<path.pt>                     a file in the www-openclip-v1 format (save_clip_checkpoint)"
)
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


def _bad_clip_spec(spec: Any, problem: str) -> ValueError:
    return ValueError(f"CLIP spec {spec!r}: {problem}. Accepted forms:\n{CLIP_ACCEPTED_FORMS}")


def parse_clip_spec(spec: str) -> ModelSpec:
    """`openclip:<name>?pretrained=<tag>` or `checkpoint:<path>` -> ModelSpec; ValueError otherwise."""
    parsed = split_spec(spec, sources=CLIP_SOURCES, error=_bad_clip_spec)
    allowed = {"openclip": {"pretrained"}, "checkpoint": set()}[parsed.source]
    if unknown := sorted(set(parsed.options) - allowed):
        raise _bad_clip_spec(spec, f"unknown option(s) {unknown} for {parsed.source}: (allowed: {sorted(allowed)})")
    if parsed.source == "openclip" and "pretrained" not in parsed.options:
        raise _bad_clip_spec(spec, "name the weights with ?pretrained=<tag> (or ?pretrained=none for random init)")
    return parsed


def _as_pair(size: Any) -> int:
    """open_clip sizes may be an int or (H, W); this encoder works with square inputs."""
    if isinstance(size, (tuple, list)):
        if len(set(int(s) for s in size)) != 1:
            raise ValueError(f"non-square CLIP input size {tuple(size)} is not supported")
        return int(size[0])
    return int(size)


class ClipEncoder:
    """A CLIP model with its tokenizer and input pipeline, producing L2-normalised embeddings.

    Attributes: `name` (the spec), `dim` (embedding size d), `image_size` (input side, pixels),
    `mean`/`std` (normalisation of [0,1] RGB), `interpolation`, `device`.
    """

    def __init__(self, model: nn.Module, tokenizer, *, name: str, dim: int, image_size: int,
                 mean, std, interpolation: str = "bicubic", device: str | torch.device = "cpu"):
        if interpolation not in _INTERPOLATIONS:
            interpolation = "bicubic"
        self.name = name
        self.dim = int(dim)
        self.image_size = int(image_size)
        self.mean = tuple(float(x) for x in mean)
        self.std = tuple(float(x) for x in std)
        self.interpolation = interpolation
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        self._tower: TextTower | None = None
        self._tower_checked = False

    def __repr__(self) -> str:
        return f"ClipEncoder({self.name!r}, dim={self.dim}, image_size={self.image_size}, device={self.device})"

    # -- images -----------------------------------------------------------------------------
    @staticmethod
    def _check_images(images) -> torch.Tensor:
        tensor = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
        if tensor.ndim != 4:
            raise ValueError(f"images must be uint8 (N,H,W,3) or float (N,3,H,W); got shape {tuple(tensor.shape)}")
        if tensor.dtype == torch.uint8:
            if tensor.shape[-1] != 3:
                raise ValueError(f"uint8 images must be (N,H,W,3) RGB; got shape {tuple(tensor.shape)}")
        elif tensor.is_floating_point():
            if tensor.shape[1] != 3:
                raise ValueError(f"float images must be (N,3,H,W) in [0,1]; got shape {tuple(tensor.shape)}")
        else:
            raise ValueError(f"images must be uint8 or float, got {tensor.dtype}")
        return tensor

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B,H,W,3) or float (B,3,H,W) in [0,1] -> normalised float (B,3,S,S) on the device.

        The shorter side is resized to S = image_size (antialiased), then the centre S x S is
        kept: CLIP's own pipeline, done on tensors.
        """
        if batch.dtype == torch.uint8:
            x = batch.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        else:
            x = batch.to(self.device, torch.float32)
        height, width = x.shape[-2:]
        size = self.image_size
        if (height, width) != (size, size):
            scale = size / min(height, width)
            new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
            antialias = self.interpolation in ("bilinear", "bicubic")
            x = F.interpolate(x, size=(new_h, new_w), mode=self.interpolation,
                              **({"antialias": True, "align_corners": False} if antialias else {}))
            top, left = (new_h - size) // 2, (new_w - size) // 2
            x = x[:, :, top:top + size, left:left + size].clamp(0.0, 1.0)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 64) -> torch.Tensor:
        """images: uint8 (N,H,W,3) or float (N,3,H,W) in [0,1], numpy or torch.
        Returns float32 (N, dim) on the CPU, each row of unit L2 norm."""
        images = self._check_images(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = torch.empty((len(images), self.dim), dtype=torch.float32)
        for start in range(0, len(images), batch_size):
            x = self.preprocess(images[start:start + batch_size])
            features = self.model.encode_image(x).float()
            out[start:start + len(x)] = F.normalize(features, dim=-1).cpu()
        return out

    # -- texts ------------------------------------------------------------------------------
    def _prefix_tower(self) -> TextTower | None:
        """The text tower when encoding a batch at its longest prompt's length is exact, else None.

        Decided once per encoder: by the tower's structure (`causal_text_tower`), then by encoding
        a few prompts both ways; any disagreement logs why and keeps the full-length encoding."""
        if self._tower_checked:
            return self._tower
        self._tower_checked = True
        tower, reason = causal_text_tower(self.model)
        if tower is not None:
            probe = self.tokenizer(["a photo of a dog.", "wheel", "a photo of a cargo box on the road"]).to(self.device)
            if probe.ndim != 2 or probe.shape[1] != tower.positional_embedding.shape[0]:
                tower, reason = None, f"the tokenizer gives {tuple(probe.shape)} tokens, not (n, context length)"
            else:
                full = F.normalize(self.model.encode_text(probe).float(), dim=-1)
                short = F.normalize(tower.encode(probe).float(), dim=-1)
                gap = float((full - short).abs().max())
                if not gap <= 1e-4:
                    tower, reason = None, f"prefix and full-length encodings differ by {gap:.2e}"
        if tower is None:
            _log().info(f"{self.name}: text encoded at the full context length ({reason})")
        self._tower = tower
        return tower

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256,
                     progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """texts: N strings (cut to the context length by the tokenizer).
        Returns float32 (N, dim) on the CPU, each row of unit L2 norm.

        For a causal text tower pooled at its end-of-text token (OpenAI CLIP and open_clip's CLIP
        models) no position attends to a later one, so the padding after the pooled token cannot
        change the result: the texts are sorted by tokenized length and each batch runs only up to
        its longest text (about 10 of 77 tokens for a templated noun). Other towers run at the full
        context length. `progress(done, total)` is called after each batch; without it, long
        encodings log done/total with a rate about every 10 s."""
        if isinstance(texts, str):
            raise ValueError("encode_texts takes a list of strings, not one string")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("encode_texts takes a list of strings")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = torch.empty((len(texts), self.dim), dtype=torch.float32)
        if not texts:
            return out
        tower = self._prefix_tower()
        report = progress or _ProgressLog(f"{self.name}: text embeddings", len(texts))
        if tower is None:
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start:start + batch_size]).to(self.device)
                features = self.model.encode_text(tokens).float()
                out[start:start + len(tokens)] = F.normalize(features, dim=-1).cpu()
                report(start + len(tokens), len(texts))
            return out
        tokens = torch.cat([self.tokenizer(texts[i:i + 4096]) for i in range(0, len(texts), 4096)])
        lengths = tower.lengths(tokens)
        order = torch.argsort(lengths, stable=True)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = tokens[rows, :int(lengths[rows].max())].to(self.device)
            out[rows] = F.normalize(tower.encode(batch).float(), dim=-1).cpu()
            report(start + len(rows), len(texts))
        return out


def _log():
    import dagster as dg

    # a Dagster logger: inside a step its lines reach the run's log, elsewhere Python's logging
    return dg.get_dagster_logger("www_resources.clip")


class _ProgressLog:
    """`done/total (rate/s)` about every `every_s` seconds, for work of at least `min_total` items."""

    def __init__(self, what: str, total: int, every_s: float = 10.0, min_total: int = 2048):
        self.what, self.every_s, self.quiet = what, every_s, total < min_total
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.last < self.every_s and done < total):
            return
        self.last = now
        _log().info(f"{self.what}: {done}/{total} ({done / max(now - self.start, 1e-9):.1f}/s)")


class TextTower:
    """The text half of an open_clip CLIP whose attention is causal and whose pooled token is the
    end-of-text token (`argmax`: the highest token id, as in OpenAI's tokenizer; `eos`: a given id).

    `encode(tokens)` takes (B, L) tokens for any L up to the context length and gives what
    `encode_text` gives for the same texts padded to the full context: every position i only
    attends to positions <= i, and the pooled position is inside the first L."""

    def __init__(self, parts, pool_type: str, eos_id: int | None):
        self.token_embedding = parts.token_embedding
        self.positional_embedding = parts.positional_embedding
        self.transformer = parts.transformer
        self.ln_final = parts.ln_final
        self.text_projection = parts.text_projection
        self.attn_mask = parts.attn_mask
        self.pool_type, self.eos_id = pool_type, eos_id

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        return (tokens == self.eos_id).int().argmax(dim=-1)

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens each text needs: up to and including its pooled token (the full context when
        an `eos` text lacks its end token, so nothing is cut on a guess)."""
        needed = self.pooled_positions(tokens) + 1
        if self.pool_type == "eos":
            needed[~(tokens == self.eos_id).any(dim=-1)] = tokens.shape[1]
        return needed

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        length = tokens.shape[1]
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


def _is_causal_mask(mask) -> bool:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.isneginf(mask[above]).all()) and bool((mask[~above] == 0).all())


def causal_text_tower(model: nn.Module) -> tuple[TextTower | None, str]:
    """(TextTower, "") when prefix encoding of `model`'s text is exact, else (None, the reason).

    Exact for open_clip's `CLIP` (its own `encode_text`) and for `CustomTextCLIP` with a plain
    `TextTransformer`, when the attention mask is causal, the tower pools the end-of-text token
    and there is no class token or padding mask (CoCa, SigLIP-style towers fall back)."""
    import open_clip
    from open_clip.transformer import TextTransformer

    encode_text = getattr(type(model), "encode_text", None)
    if encode_text is open_clip.CLIP.encode_text:
        parts, pool_type, eos_id = model, getattr(model, "text_pool_type", None), getattr(model, "text_eos_id", None)
    elif (encode_text is open_clip.CustomTextCLIP.encode_text
          and type(getattr(model, "text", None)).forward is TextTransformer.forward):
        parts = model.text
        if parts.cls_emb is not None or getattr(parts, "use_pad_mask", False) or parts.output_tokens:
            return None, "the text tower has a class token, a padding mask or token outputs"
        pool_type, eos_id = parts.pool_type, getattr(parts, "eos_id", None)
    else:
        return None, f"{type(model).__name__} is not an open_clip CLIP with a plain text transformer"
    if pool_type not in ("argmax", "eos") or (pool_type == "eos" and eos_id is None):
        return None, f"the text tower pools {pool_type!r}, not the end-of-text token"
    if not _is_causal_mask(getattr(parts, "attn_mask", None)):
        return None, "the text attention is not causal"
    if parts.positional_embedding.ndim != 2 or parts.positional_embedding.shape[0] != parts.attn_mask.shape[0]:
        return None, "the positional embedding is not one learned vector per position"
    return TextTower(parts, pool_type, eos_id), ""


# -- checkpoints ----------------------------------------------------------------------------

def _model_class(model_config: dict):
    import open_clip

    if "multimodal_cfg" in model_config:
        raise ValueError("CoCa configs (multimodal_cfg) are not supported by the CLIP checkpoint loader")
    if "hf_model_name" in model_config.get("text_cfg", {}):
        raise ValueError("configs with a Hugging Face text tower (hf_model_name) are not supported offline")
    return open_clip.CustomTextCLIP if model_config.get("custom_text") else open_clip.CLIP


def build_clip_model(model_config: dict) -> nn.Module:
    """A randomly initialised open_clip model from a config dict (embed_dim, vision_cfg, text_cfg, ...)."""
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in model_config:
            raise ValueError(f"open_clip model config lacks {key!r}; it has {sorted(model_config)}")
    config = copy.deepcopy(dict(model_config))
    model_class = _model_class(config)
    config.pop("custom_text", None)
    return model_class(**config)


def save_clip_checkpoint(model: nn.Module, path: str | Path, *, model_config: dict, image_mean, image_std,
                         image_size: int, context_length: int) -> Path:
    """Write a CLIP in the www-openclip-v1 format (atomically); `load_clip('checkpoint:<path>')` reads it.

    model_config: the dict the model was built from (build_clip_model(model_config));
    image_mean/std: 3 floats each; image_size: input side in pixels; context_length: tokens.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "format": CLIP_CHECKPOINT_FORMAT,
        "model_config": copy.deepcopy(dict(model_config)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "image_mean": [float(x) for x in image_mean],
        "image_std": [float(x) for x in image_std],
        "image_size": int(image_size),
        "context_length": int(context_length),
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(content, partial)
    partial.replace(path)
    return path


def _load_clip_checkpoint(spec: str, ms: ModelSpec, base_dir: Path | None, device) -> ClipEncoder:
    from open_clip.tokenizer import SimpleTokenizer

    path = resolve_checkpoint_path(ms.name, base_dir)
    if not path.is_file():
        raise ModelUnavailableError(
            f"CLIP spec {spec!r}: checkpoint file {path} does not exist. Train the world's CLIP "
            "(materialize its asset) or copy the file there."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        from www_resources.checkpoint_safety import checkpoint_load_error

        raise ModelUnavailableError(f"CLIP {checkpoint_load_error(path, err)}") from err
    if not isinstance(content, dict) or content.get("format") != CLIP_CHECKPOINT_FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ModelUnavailableError(
            f"CLIP checkpoint {path} is not in the {CLIP_CHECKPOINT_FORMAT!r} format (found {found!r}); "
            "write it with www_resources.clip.save_clip_checkpoint"
        )
    required = ("model_config", "state_dict", "image_mean", "image_std", "image_size", "context_length")
    if missing := [k for k in required if k not in content]:
        raise ModelUnavailableError(f"CLIP checkpoint {path} lacks {missing}")
    model_config = content["model_config"]
    model = build_clip_model(model_config)
    model.load_state_dict(content["state_dict"], strict=True)
    context_length = int(content["context_length"])
    model_context = getattr(model, "context_length", context_length)
    if model_context != context_length:
        raise ValueError(f"CLIP checkpoint {path}: context_length {context_length} != the model's {model_context}")
    return ClipEncoder(
        model,
        SimpleTokenizer(context_length=context_length),
        name=spec,
        dim=int(model_config["embed_dim"]),
        image_size=int(content["image_size"]),
        mean=content["image_mean"],
        std=content["image_std"],
        interpolation="bicubic",
        device=device,
    )


# -- open_clip by name ----------------------------------------------------------------------

def _load_openclip(spec: str, ms: ModelSpec, device, allow_download: bool | None) -> ClipEncoder:
    import open_clip

    name, tag = ms.name, ms.options["pretrained"]
    known = open_clip.list_models()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=8, cutoff=0.5)
        raise UnknownArchitectureError(
            f"CLIP spec {spec!r}: open_clip has no model {name!r}; close matches: {close}; "
            f"all: python -c \"import open_clip; print(open_clip.list_models())\""
        )
    random_init = tag.strip().lower() in ("none", "null", "false")
    kwargs: dict[str, Any] = {"device": "cpu"}
    if random_init:
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=None, **kwargs)
    else:
        pcfg = open_clip.get_pretrained_cfg(name, tag)
        if not pcfg:
            raise _bad_clip_spec(
                spec, f"open_clip has no pretrained tag {tag!r} for {name}; known: {open_clip.list_pretrained_tags_by_model(name)}"
            )
        fetch = f"python -c \"import open_clip; open_clip.create_model_and_transforms('{name}', pretrained='{tag}')\""
        model = None
        hub_id = pcfg.get("hf_hub", "")
        if hub_id:
            repo = hub_id.rstrip("/").split("/")
            repo_id = "/".join(repo[:2])
            looked_in = f"{hf_cache_dir()} (Hugging Face repo {repo_id})"
            copy_hint = (f"the folder models--{repo_id.replace('/', '--')} of the Hugging Face cache into "
                         f"{hf_cache_dir()} here (or point HF_HOME at a cache that has it).")
            probe_url = hf_endpoint()
            try:
                with hub_offline(), quiet_library_errors():
                    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=tag, **kwargs)
            except Exception as err:
                if not is_cache_miss(err):
                    raise
        else:
            url = pcfg.get("url", "")
            cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
            looked_in, copy_hint, probe_url = str(cached), f"{cached.name} into {cached.parent} here.", url
            if cached.is_file():
                model, _, _ = open_clip.create_model_and_transforms(name, pretrained=tag, **kwargs)
        if model is None:
            refusal = download_refusal(allow_download, probe_url)
            if refusal:
                raise weights_unavailable(spec, looked_in=looked_in, reason=refusal, fetch=fetch, copy_hint=copy_hint)
            try:
                with socket_timeout(download_timeout_s()):
                    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=tag, **kwargs)
            except Exception as err:
                if is_cache_miss(err):
                    raise weights_unavailable(spec, looked_in=looked_in, reason=f"download failed: {err}",
                                              fetch=fetch, copy_hint=copy_hint) from err
                raise
    pre = open_clip.get_model_preprocess_cfg(model)
    context_length = open_clip.get_model_tokenize_cfg(model).get("context_length", 77)
    return ClipEncoder(
        model,
        open_clip.get_tokenizer(name, context_length=context_length),
        name=spec,
        dim=int(open_clip.get_model_config(name)["embed_dim"]),
        image_size=_as_pair(pre.get("size", 224)),
        mean=pre.get("mean", open_clip.OPENAI_DATASET_MEAN),
        std=pre.get("std", open_clip.OPENAI_DATASET_STD),
        interpolation=pre.get("interpolation", "bicubic"),
        device=device,
    )


def load_clip(spec: str, *, base_dir: Path | None = None, device: str | torch.device = "cpu",
              allow_download: bool | None = None) -> ClipEncoder:
    """A ready ClipEncoder for a spec (see the module docstring), on `device`.

    base_dir: folder for relative checkpoint paths (default: the data folder).
    device: 'cpu', 'cuda', 'cuda:1', 'mps', 'auto' or a torch.device.
    Raises ValueError for a malformed spec, ModelUnavailableError when it cannot be loaded here.
    """
    ms = parse_clip_spec(spec)
    if isinstance(device, str):
        from www_resources.device import resolve_device

        device = resolve_device(device)
    if ms.source == "checkpoint":
        return _load_clip_checkpoint(str(spec), ms, base_dir, device)
    return _load_openclip(str(spec), ms, device, allow_download)

