"""Partitions: registered models, concept sets, CLIPs, probe views, and their products.

Model keys are the registry file names (`data/models/<key>.yaml`); concept-set keys are the
names in `data/concept_sets.yaml`. The registry sensor adds keys as files appear.

The CLIP embeddings are keyed by what they depend on, not by the model that asked for them, so
that models sharing a CLIP, a concept set and a probe set compute them once:

* `clips`: one key per CLIP spec of the registry (`clip_key`), e.g. `checkpoint-artifacts-models-
  world-clip.pt-1f0c2a9b`: a readable slug of the spec and a digest of it (two specs that slug
  alike never share a key);
* `probe_sets`: one key per probe set *as a model frames it* (`probe_key`): the probe-set spec and
  the view geometry, i.e. the preprocessing's input size and resize side (`world` for the world's
  native frames). The full-image and grid-crop views are those pixels, so two models with the
  same probe folder but a different input geometry see different views and get different keys.

`clip_concepts` (clip x concept set) partitions the text embeddings and `clip_probes` (clip x
probe set) the full-image and grid-crop image embeddings. Only the Grad-CAM views depend on the
model; they stay partitioned by model.
"""

from __future__ import annotations

import hashlib
import re

import dagster as dg

models = dg.DynamicPartitionsDefinition(name="models")
concept_sets = dg.DynamicPartitionsDefinition(name="concept_sets")
clips = dg.DynamicPartitionsDefinition(name="clips")
probe_sets = dg.DynamicPartitionsDefinition(name="probe_sets")
model_concepts = dg.MultiPartitionsDefinition({"model": models, "concept_set": concept_sets})
clip_concepts = dg.MultiPartitionsDefinition({"clip": clips, "concept_set": concept_sets})
clip_probes = dg.MultiPartitionsDefinition({"clip": clips, "probe": probe_sets})

_SLUG_RUN = re.compile(r"[^A-Za-z0-9._-]+")


def _readable_key(text: str, width: int = 48) -> str:
    """A partition key for a spec: its slug (at most `width` characters) and 8 hex digits of its
    SHA-256 (the slug alone could merge two specs)."""
    slug = _SLUG_RUN.sub("-", text).strip("-._")[:width].strip("-._") or "x"
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def clip_key(clip_spec: str) -> str:
    """The `clips` partition of a registry `clip:` spec."""
    return _readable_key(clip_spec.strip())


def view_geometry(entry) -> str:
    """How a model frames its probe images: `world` (the world's native frames) or
    `<size>-<resize>` (shorter side resized to `resize`, centre crop `size`), resolved the way
    `preprocessing_for` resolves it (a missing resize comes from the model's weights)."""
    from www_resources.registry import WORLD_PREPROCESSING

    if entry.preprocessing == WORLD_PREPROCESSING:
        return "world"
    pre = entry.preprocessing
    if pre.get("resize") is None:
        from www_resources.target import preprocessing_for

        resolved = preprocessing_for(entry)
        return f"{resolved.size}-{resolved.resize}"
    return f"{int(pre['size'])}-{int(pre['resize'])}"


def probe_key(entry) -> str:
    """The `probe_sets` partition of a model: its probe set and view geometry."""
    return _readable_key(f"{entry.probe_set.strip()}@{view_geometry(entry)}")


def model_key(context) -> str:
    """The model of a model-partitioned or model x concept-set-partitioned run."""
    key = context.partition_key
    by_dimension = getattr(key, "keys_by_dimension", None)
    return by_dimension["model"] if by_dimension else key


def concept_set_key(context) -> str:
    return context.partition_key.keys_by_dimension["concept_set"]


def dimension_key(context, dimension: str) -> str:
    """One dimension of a multi-partitioned run's key."""
    return context.partition_key.keys_by_dimension[dimension]


_shared_cache: dict[tuple, tuple[str, str]] = {}


def shared_keys(entry) -> tuple[str, str]:
    """(clips key, probe_sets key) of a registered model; remembered per (CLIP, probe set,
    model spec, preprocessing), since resolving a default resize may read the model's weights'
    metadata."""
    memo = (entry.clip, entry.probe_set, entry.model, entry.architecture, repr(entry.preprocessing))
    if memo not in _shared_cache:
        _shared_cache[memo] = (clip_key(entry.clip), probe_key(entry))
    return _shared_cache[memo]


def shared_partitions(entries) -> list[tuple[str, str, str]]:
    """(model, CLIP key, probe-view key) of the entries whose keys resolve (a preprocessing whose
    default resize cannot be read leaves its model out of the shared partitions)."""
    out = []
    for name, entry in entries.items():
        try:
            out.append((name, *shared_keys(entry)))
        except Exception:  # noqa: BLE001 - a model that cannot be loaded is reported when its own run loads it
            continue
    return out


def sharing_model(context):
    """A registered model whose CLIP (and probe view, for clip x probe runs) is this run's
    partition: the shared assets read the CLIP spec, the probe set and its geometry from it.

    Raises:
        ValueError: when no valid registry file maps to the partition any more.
    """
    from www_resources.registry import scan_models

    wanted = dict(context.partition_key.keys_by_dimension)
    for entry in scan_models().entries.values():
        clip, probe = shared_keys(entry)
        if wanted["clip"] == clip and wanted.get("probe", probe) == probe:
            return entry
    raise ValueError(
        f"no registered model uses the CLIP / probe partition {wanted}: its registry files were deleted or "
        "changed; nothing needs this partition any more"
    )
