"""Concept sets of the world: its own vocabulary, and a larger set with distractor nouns.

`vocabulary(config)` lists every word the world can show, with its kind and the canonical
thing it names: class names and synonyms, superclasses (every node of the hierarchy below
the root ``thing``), part names, colours, textures and backgrounds.

`concept_list(config, distractors=True)` adds nouns that the world never shows, so a
concept-discovery method has wrong answers to choose from: the top of the shipped list
``data/concepts/distractor_nouns.txt``, whatever the machine has installed, so that the world's
results do not depend on whether nltk's WordNet is set up. `distractor_nouns(config, "wordnet")`
samples WordNet nouns instead (first lemma of each noun synset, '_' -> ' '), deterministically
from the config's seed. World words are always removed from the distractors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .scenes import (
    BACKGROUNDS,
    COLOUR_NAMES,
    SUPERCLASS_PARENT,
    TEXTURES,
    WorldConfig,
    world_classes,
)

KINDS = ("class", "synonym", "superclass", "part", "colour", "texture", "background")
DISTRACTOR_FILE = Path(__file__).resolve().parents[2] / "data" / "concepts" / "distractor_nouns.txt"


def vocabulary(config: WorldConfig) -> pd.DataFrame:
    """World words, one row per concept: columns concept (lower-case str), kind (one of
    `KINDS`), refers_to (the canonical class / superclass / part / colour / texture /
    background it names). Concepts are unique; order: kinds in `KINDS` order, then the
    world's own order."""
    rows: list[tuple[str, str, str]] = []
    classes = world_classes(config)
    rows += [(c.name, "class", c.name) for c in classes]
    rows += [(s, "synonym", c.name) for c in classes for s in c.synonyms]
    superclasses = list(dict.fromkeys(c.superclass for c in classes))
    level1 = list(dict.fromkeys(SUPERCLASS_PARENT[s] for s in superclasses))
    rows += [(s, "superclass", s) for s in level1 + superclasses]
    parts = list(dict.fromkeys(p for c in classes for p in c.part_names))
    rows += [(p, "part", p) for p in parts]
    rows += [(c, "colour", c) for c in COLOUR_NAMES]
    rows += [(t, "texture", t) for t in TEXTURES]
    rows += [(b, "background", b) for b in BACKGROUNDS]
    frame = pd.DataFrame(rows, columns=["concept", "kind", "refers_to"])
    frame["concept"] = frame["concept"].str.lower()
    duplicated = frame["concept"][frame["concept"].duplicated()].tolist()
    if duplicated:  # a world-definition error, not a user error
        raise ValueError(f"world vocabulary has concepts with two meanings: {duplicated}")
    return frame


def read_distractor_file(path: str | Path = DISTRACTOR_FILE) -> list[str]:
    """Nouns of a one-per-line text file (lines starting with '#' and blanks skipped), lower-cased."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"distractor noun list not found at {path}")
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.strip().lower()
        if word and not word.startswith("#"):
            words.append(word)
    return list(dict.fromkeys(words))


def _nltk_data_dirs() -> list[Path]:
    """nltk's default data folders (nltk.data.path), computed without importing nltk."""
    import os
    import sys

    dirs = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    dirs += [Path.home() / "nltk_data", Path(sys.prefix) / "nltk_data", Path(sys.prefix) / "share" / "nltk_data",
             Path(sys.prefix) / "lib" / "nltk_data", Path("/usr/share/nltk_data"), Path("/usr/local/share/nltk_data"),
             Path("/usr/lib/nltk_data"), Path("/usr/local/lib/nltk_data")]
    return dirs


def _wordnet_noun_file() -> Path | None:
    for d in _nltk_data_dirs():
        for candidate in (d / "corpora" / "wordnet" / "data.noun", d / "corpora" / "wordnet.zip"):
            if candidate.exists():
                return candidate
    return None


def wordnet_installed() -> bool:
    """Whether nltk's WordNet corpus is on disk (checked without importing nltk, which is slow)."""
    return _wordnet_noun_file() is not None


def wordnet_nouns() -> list[str] | None:
    """First lemma of every WordNet noun synset ('_' -> ' ', lower-case, de-duplicated), or
    None when nltk's WordNet corpus is not installed (nothing is downloaded).

    Reads the corpus file ``data.noun`` directly (one synset per line, the first lemma is the
    fifth field), which gives the same lemmas as nltk's reader in a fraction of the time."""
    import zipfile

    path = _wordnet_noun_file()
    if path is None:
        return None
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("wordnet/data.noun")), None)
            if name is None:
                return None
            text = archive.read(name).decode("utf-8", errors="replace")
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
    words = (line.split(" ", 5)[4] for line in text.splitlines() if line and not line.startswith(" "))
    return list(dict.fromkeys(w.replace("_", " ").lower() for w in words))


def distractor_nouns(config: WorldConfig, source: str = "file") -> list[str]:
    """`config.n_distractor_concepts` nouns that are not world words.

    source: "file" (the shipped list: the world's concept set, the same on every machine),
    "wordnet" or "auto" (WordNet if installed, else the file).
    WordNet nouns are a deterministic sample (seeded by config.seed) kept in WordNet order;
    the file's nouns are taken from the top. Raises ValueError when fewer than 300 remain."""
    if source not in ("auto", "wordnet", "file"):
        raise ValueError(f"source must be 'auto', 'wordnet' or 'file', got {source!r}")
    world = set(vocabulary(config)["concept"])
    pool = None
    if source in ("auto", "wordnet"):
        pool = wordnet_nouns()
        if pool is None and source == "wordnet":
            raise ValueError(
                "nltk's WordNet corpus is not installed; on a machine with internet run "
                "`python -m nltk.downloader wordnet`"
            )
    sample_from_pool = pool is not None
    if pool is None:
        pool = read_distractor_file()
    pool = [w for w in pool if w not in world]
    n = min(config.n_distractor_concepts, len(pool))
    if sample_from_pool:
        rng = np.random.default_rng([int(config.seed), 7])
        chosen = np.sort(rng.choice(len(pool), size=n, replace=False))
        words = [pool[i] for i in chosen]
    else:
        words = pool[:n]
    if len(words) < 300:
        raise ValueError(f"only {len(words)} distractor nouns available; at least 300 are needed")
    return words


def concept_list(config: WorldConfig, distractors: bool) -> list[str]:
    """De-duplicated world words (in `vocabulary` order), plus distractor nouns if asked."""
    words = list(dict.fromkeys(vocabulary(config)["concept"]))
    if distractors:
        words += [w for w in distractor_nouns(config) if w not in set(words)]
    return words
