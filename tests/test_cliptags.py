"""CLIP-vocabulary tags: the shipped vocabulary, the calibrated selection, the cached concept matrix, the
tags reaching the catalog and the sidecar, and related-tag search ("animal" → images tagged "dog").

The stand-in CLIP has random weights: these tests prove the code paths and the numbers (a planted
embedding gets its concept; the matrix is the prompt-ensembled text tower), not tag quality."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import CLIP_TAGS_OFF, Env, noise

from pixdex.indexer.cliptags import ClipTagger, parse_vocabulary, select, shipped_vocabulary, vocabulary
from pixdex.indexer.embedder import ClipModel
from pixdex.indexer.export import STANDIN_CLIP
from pixdex.indexer.sections import ClipTagSettings


def test_the_shipped_vocabulary_is_large_clean_and_extendable(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    shipped = parse_vocabulary(shipped_vocabulary())
    assert len(shipped) >= 2000
    assert len({c.casefold() for c in shipped}) == len(shipped)  # no repeats
    assert {"dog", "cat", "receipt", "sunset", "birthday cake", "snow", "wedding"} <= set(shipped)
    extra = tmp_path / "mine.txt"
    extra.write_text("# my things\nGrandma's Garden\n  dog  \nmy   red bike\n", encoding="utf-8")
    concepts = vocabulary(ClipTagSettings(vocabulary_extra=[str(extra)], exclude=["Receipt"]))
    assert "Grandma's Garden" in concepts and "my red bike" in concepts and "receipt" not in concepts
    assert concepts.count("dog") == 1 and len(concepts) == len(shipped) + 1  # +2 new, -1 excluded
    with caplog.at_level("WARNING", logger="pixdex.indexer.cliptags"):
        missing = vocabulary(ClipTagSettings(vocabulary_extra=[str(tmp_path / "nothere.txt"), str(extra)]))
    assert "nothere.txt: cannot read this [clip_tags] vocabulary_extra file" in caplog.text
    assert "Grandma's Garden" in missing and len(missing) == len(shipped) + 2  # tagging goes on without it


def test_selection_is_calibrated_against_the_vocabulary_not_a_raw_cosine() -> None:
    rng = np.random.default_rng(0)
    concepts = [f"c{i}" for i in range(500)]
    sims = rng.normal(0.2, 0.02, 500).astype(np.float32)
    sims[[7, 42]] = [0.32, 0.29]  # 6σ and 4.5σ above the rest
    picked = select(sims, concepts, 4.0, 8)
    assert [t["name"] for t in picked] == ["c7", "c42"]
    assert 1 >= picked[0]["confidence"] > picked[1]["confidence"] > 0 and picked[0]["source"] == "clip"
    assert picked[0]["sigma"] > 5.5
    # Another model's cosine scale (say, 3× wider and shifted) gives the same tags: a raw cut would not.
    assert [t["name"] for t in select(sims * 3 - 0.4, concepts, 4.0, 8)] == ["c7", "c42"]
    assert [t["name"] for t in select(sims, concepts, 5.0, 8)] == ["c7"]
    assert [t["name"] for t in select(sims, concepts, 4.0, 1)] == ["c7"]
    assert select(np.full(500, 0.2, np.float32), concepts, 4.0, 8) == []  # nothing stands out


def test_the_concept_matrix_is_the_prompt_ensembled_text_tower_and_is_cached(model_dir: Path,
                                                                             tmp_path: Path) -> None:
    clip = ClipModel(model_dir / "clip" / STANDIN_CLIP)
    settings = ClipTagSettings(templates=["a photo of {}.", "{}"])
    tagger = ClipTagger(clip, settings, tmp_path / "cache")
    matrix = tagger.matrix
    assert matrix.shape == (len(tagger.concepts), clip.dim)
    i = tagger.concepts.index("dog")
    mean = clip.embed_texts(["a photo of dog.", "dog"]).sum(axis=0)
    np.testing.assert_allclose(matrix[i], mean / np.linalg.norm(mean), atol=1e-5)
    [cached] = list((tmp_path / "cache").glob("*.npy"))

    again = ClipTagger(ClipModel(model_dir / "clip" / STANDIN_CLIP), settings, tmp_path / "cache")
    np.testing.assert_array_equal(again.matrix, matrix)
    assert again.clip.textual.calls == 0  # read from the cache, not embedded again
    assert clip.textual.calls > 0
    assert again.id == tagger.id
    other = ClipTagger(clip, dataclasses.replace(settings, templates=["{}"]), tmp_path / "cache")
    assert other.id != tagger.id and not np.allclose(other.matrix, matrix)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2 and cached.exists()

    planted = matrix[[i, tagger.concepts.index("receipt")]]  # an image embedding that *is* the concept
    # (the random stand-in's text embeddings are much alike, so even a perfect match is only ~2σ out)
    tags = ClipTagger(clip, dataclasses.replace(settings, min_sigma=1.5), tmp_path / "cache").tag(planted)
    assert tags[0][0]["name"] == "dog" and tags[1][0]["name"] == "receipt"


def _tags(env: Env) -> dict[str, list[dict[str, object]]]:
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    rows = {Path(p.decode() if isinstance(p, bytes) else p).name: json.loads(t)
            for p, t in db.execute("SELECT path, tags FROM images")}
    db.close()
    return rows


def test_indexing_adds_vocabulary_tags_to_the_catalog_and_the_sidecar(env: Env,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    env.config.write_text(env.config.read_text().replace(CLIP_TAGS_OFF, "[clip_tags]\nmin_sigma = 2.0\nmax_tags = 3\n"))
    for n in range(3):
        noise(n).save(env.pics / f"img{n}.png")
    assert env.index_json(capsys)["embedded"] == 3
    tags = _tags(env)
    vocab = {c.casefold() for c in parse_vocabulary(shipped_vocabulary())}
    for name, found in tags.items():
        clip_tags = [t for t in found if t.get("source") == "clip"]
        assert 1 <= len(clip_tags) <= 3, name
        assert all(str(t["name"]).casefold() in vocab and float(t["sigma"]) >= 2.0 for t in clip_tags)  # type: ignore[arg-type]
        sidecar = (env.pics / f"{name}.xmp").read_text()
        assert all(f"pixdex|{t['name']}" in sidecar for t in clip_tags)
    # A change of the selection settings is a new tagger: the images are tagged again.
    env.config.write_text(env.config.read_text().replace("max_tags = 3", "max_tags = 1"))
    again = env.index_json(capsys)
    assert again["tagged"] == 3
    assert all(len([t for t in found if t.get("source") == "clip"]) <= 1 for found in _tags(env).values())


def test_related_tags_widen_the_text_side(env: Env, capsys: pytest.CaptureFixture[str], model_dir: Path) -> None:
    """A query word finds images tagged with the vocabulary concepts nearest to it (by the text tower),
    though the word is nowhere in them; with the threshold at 1 they are not found."""
    env.config.write_text(env.config.read_text().replace(CLIP_TAGS_OFF, "[clip_tags]\nmin_sigma = 50\n"))  # no tags
    for n in range(6):
        noise(n).save(env.pics / f"img{n}.png")
    clip = ClipModel(model_dir / "clip" / STANDIN_CLIP)
    settings = ClipTagSettings(min_sigma=50)
    concepts = vocabulary(settings)
    matrix = ClipTagger(clip, settings, Path(env.environ["XDG_CACHE_HOME"]) / "pixdex" / "vocabulary").matrix
    query = "zeppelin"  # not a concept, not in any file name
    sims = matrix @ clip.embed_texts([query])[0]  # the query's own embedding against the concepts
    nearest, cosine = concepts[int(np.argmax(sims))], float(np.max(sims))
    # A person tagged one image with that concept (its sidecar); the word itself is nowhere.
    (env.pics / "img2.png.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
        f'<rdf:li>{nearest}</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
    env.index_json(capsys)

    def found(threshold: float) -> tuple[list[str], list[str]]:
        text = env.config.read_text().split("[search]")[0]
        env.config.write_text(text + f"[search]\nrelated_tags = {threshold}\n")
        status, out, err = env.cli("search", query, "--json", capsys=capsys)
        assert status == 0, err
        result = json.loads(out)
        return [Path(h["path"]).name for h in result["hits"] if h["text_rank"]], result["notes"]

    hits, notes = found(round(cosine - 0.001, 4))
    assert hits == ["img2.png"] and any(nearest in n for n in notes), (nearest, cosine, notes)
    hits, notes = found(1.0)
    assert hits == [] and not any(nearest in n for n in notes)
