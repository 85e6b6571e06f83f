"""Concept sets from files, class-name files, WordNet and the world; the WordNet installer."""

from __future__ import annotations

from pathlib import Path

import pytest

import www_resources.world
from www_resources import concept_sets, wordnet_setup
from www_resources.concept_sets import (
    ConceptSetError,
    WordNetUnavailableError,
    load_concept_set,
)


def _wordnet_installed() -> bool:
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except LookupError:
        return False
    return True


DEBIAN_WORDNET = (wordnet_setup.DEBIAN_WORDNET_DIR / "data.noun").is_file()


@pytest.fixture(scope="session")
def _debian_wordnet_for_nltk(tmp_path_factory) -> Path | None:
    """An nltk data folder holding Debian's WordNet (copied by the project's installer), or None
    when nltk reads WordNet already."""
    if _wordnet_installed():
        return None
    if not DEBIAN_WORDNET:
        pytest.skip("WordNet is not installed for nltk and Debian's wordnet-base is missing "
                    "(apt-get install wordnet-base wordnet-sense-index)")
    root = tmp_path_factory.mktemp("nltk_data")
    wordnet_setup.copy_database(wordnet_setup.DEBIAN_WORDNET_DIR, root)
    return root


@pytest.fixture
def wordnet_for_nltk(_debian_wordnet_for_nltk, monkeypatch):
    """nltk reads WordNet 3.0 during the test: as installed, or from Debian's files."""
    import nltk

    if _debian_wordnet_for_nltk is not None:
        monkeypatch.setattr(nltk.data, "path", [str(_debian_wordnet_for_nltk), *nltk.data.path])
    concept_sets._wordnet_nouns.cache_clear()
    yield
    concept_sets._wordnet_nouns.cache_clear()


# -- files ----------------------------------------------------------------------------------

def test_file_concepts_strip_skip_comments_and_drop_repeats(tmp_path):
    (tmp_path / "concepts.txt").write_text(
        "# colours first\n  red \n\nblue\n#blue is repeated below\nred\ngreen\n  \nhot dog\nblue\n", encoding="utf-8"
    )
    assert load_concept_set("file:concepts.txt", base_dir=tmp_path) == ["red", "blue", "green", "hot dog"]
    assert load_concept_set(f"file:{tmp_path / 'concepts.txt'}") == ["red", "blue", "green", "hot dog"]


def test_class_names_keep_every_line_in_order(tmp_path):
    (tmp_path / "classes.txt").write_text("tench\ngoldfish\ncrane\ncrane\n\n", encoding="utf-8")
    # ImageNet has two classes called 'crane': line i must stay class i, so no de-duplication.
    assert load_concept_set("classes:classes.txt", base_dir=tmp_path) == ["tench", "goldfish", "crane", "crane"]
    (tmp_path / "gappy.txt").write_text("a\n\nb\n", encoding="utf-8")
    with pytest.raises(ConceptSetError, match=r"blank lines \[2\]"):
        load_concept_set("classes:gappy.txt", base_dir=tmp_path)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConceptSetError) as info:
        load_concept_set("file:absent.txt", base_dir=tmp_path)
    assert str(tmp_path / "absent.txt") in str(info.value) and "does not exist" in str(info.value)
    (tmp_path / "empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ConceptSetError, match="holds no concepts"):
        load_concept_set("file:empty.txt", base_dir=tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConceptSetError, match="not UTF-8"):
        load_concept_set("file:latin1.txt", base_dir=tmp_path)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("concepts.txt", "'<kind>:<argument>'"),
        ("csv:concepts.csv", "unknown kind 'csv'"),
        ("file:", "give the file"),
        ("wordnet:verbs", "wordnet:nouns"),
        ("world:colours", "world:vocabulary"),
        (None, "'<kind>:<argument>'"),
    ],
)
def test_bad_specs_list_the_accepted_forms(spec, fragment):
    with pytest.raises(ConceptSetError) as info:
        load_concept_set(spec)
    assert fragment in str(info.value) and "wordnet:nouns" in str(info.value) and "file:<path.txt>" in str(info.value)
    assert isinstance(info.value, ValueError)


# -- the world ------------------------------------------------------------------------------

def test_world_specs_delegate_to_the_world_concept_list(monkeypatch):
    calls = []

    def concept_list(config, distractors=False):
        calls.append((config, distractors))
        return ("wheel", "window") + (("volcano",) if distractors else ())

    monkeypatch.setattr(www_resources.world, "concept_list", concept_list, raising=False)
    assert load_concept_set("world:vocabulary") == ["wheel", "window"]
    assert load_concept_set("world:vocabulary+distractors", world_config="small") == ["wheel", "window", "volcano"]
    assert calls == [(None, False), ("small", True)]


# -- WordNet --------------------------------------------------------------------------------

def _first_lemmas_from_data_noun(path: Path) -> list[str]:
    """Independent reading of WordNet's data.noun: field 5 of each synset line is its first word."""
    words = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):  # the license header
                continue
            words.append(line.split(" ", 5)[4].replace("_", " "))
    return words


def test_wordnet_nouns_are_the_first_lemma_of_all_82115_noun_synsets(wordnet_for_nltk):
    from nltk.corpus import wordnet

    nouns = load_concept_set("wordnet:nouns")
    assert len(nouns) == 82115
    assert nouns[0] == "entity"
    assert not any("_" in noun for noun in nouns)
    assert len(set(nouns)) < len(nouns)  # e.g. 'bank' heads several synsets: kept, as in the paper
    assert nouns == _first_lemmas_from_data_noun(Path(wordnet.root.path) / "data.noun")
    nouns.append("mutated")
    assert len(load_concept_set("wordnet:nouns")) == 82115  # the cached list is not shared


def test_missing_wordnet_says_how_to_install_it(monkeypatch, tmp_path):
    import nltk.corpus
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.corpus.util import LazyCorpusLoader

    absent = LazyCorpusLoader("wordnet-absent-for-this-test", WordNetCorpusReader, None)
    monkeypatch.setattr(nltk.corpus, "wordnet", absent)
    concept_sets._wordnet_nouns.cache_clear()
    try:
        with pytest.raises(WordNetUnavailableError) as info:
            load_concept_set("wordnet:nouns")
    finally:
        concept_sets._wordnet_nouns.cache_clear()
    assert "python -m www_resources.wordnet_setup" in str(info.value)


# -- the installer --------------------------------------------------------------------------

def test_shipped_lexnames_table_matches_man_5_lexnames():
    lines = wordnet_setup.LEXNAMES_FILE.read_text().splitlines()
    assert len(lines) == 45
    rows = [line.split("\t") for line in lines]
    assert all(len(row) == 3 for row in rows)
    assert [int(row[0]) for row in rows] == list(range(45))
    assert all(row[0] == f"{i:02d}" for i, row in enumerate(rows))
    categories = {"noun": "1", "verb": "2", "adj": "3", "adv": "4"}
    assert all(row[2] == categories[row[1].split(".")[0]] for row in rows)
    assert rows[0] == ["00", "adj.all", "3"] and rows[3] == ["03", "noun.Tops", "1"]
    assert rows[18] == ["18", "noun.person", "1"] and rows[44] == ["44", "adj.ppl", "3"]
    assert sum(row[1].startswith("noun.") for row in rows) == 26


def test_setup_refuses_an_incomplete_source(tmp_path, monkeypatch):
    empty = tmp_path / "empty_source"
    with pytest.raises(wordnet_setup.WordNetSetupError) as info:
        wordnet_setup.setup_wordnet(tmp_path / "target", empty, install=False)
    assert "'data.noun'" in str(info.value) and "WordNet 3.0 'dict' folder" in str(info.value)
    monkeypatch.setattr(wordnet_setup, "DEBIAN_WORDNET_DIR", empty)  # as if wordnet-base were absent
    with pytest.raises(wordnet_setup.WordNetSetupError) as info:
        wordnet_setup.setup_wordnet(tmp_path / "target", empty, install=False)
    assert "apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index" in str(info.value)
    assert not (tmp_path / "target").exists()


def test_default_target_follows_nltk_data(monkeypatch, tmp_path):
    monkeypatch.setenv("NLTK_DATA", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert wordnet_setup.default_target() == tmp_path / "a"


@pytest.mark.skipif(not DEBIAN_WORDNET,
                    reason="Debian's wordnet-base is not installed (apt-get install wordnet-base wordnet-sense-index)")
def test_copy_database_gives_a_corpus_nltk_reads(tmp_path, monkeypatch):
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])  # nltk reads only its roots
    corpus = wordnet_setup.copy_database(wordnet_setup.DEBIAN_WORDNET_DIR, tmp_path)
    assert corpus == tmp_path / "corpora" / "wordnet"
    assert not [p for p in (tmp_path / "corpora").iterdir() if p.name != "wordnet"]  # no staging left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = WordNetCorpusReader(str(corpus), None)
    dog = reader.synset("dog.n.01")
    assert dog.lexname() == "noun.animal" and dog.lemma_names()[:2] == ["dog", "domestic_dog"]
    assert reader.get_version() == "3.0"
