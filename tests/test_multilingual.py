"""The multilingual CLIP (open_clip's xlm-roberta-base-ViT-B-32): a tiny stand-in of the same architecture
— an XLM-RoBERTa text tower from `transformers` and a Unigram tokenizer in XLM-RoBERTa's form — exported
by the real export code, checked against open_clip, then used by pixdex for German and Korean queries."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import Env, make_library, write_config

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def multilingual(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pixdex.indexer.export import write_standin_multilingual_clip

    directory = tmp_path_factory.mktemp("multilingual-models")
    shutil.copytree(model_dir, directory, dirs_exist_ok=True)
    write_standin_multilingual_clip(directory)
    return directory


def test_the_export_reproduces_open_clip_and_carries_the_xlm_roberta_tokenizer(multilingual: Path) -> None:
    from pixdex.indexer.embedder import ClipModel

    folder = multilingual / "clip" / "pixdex-standin-multilingual-clip"
    record = json.loads((folder / "pixdex-model.json").read_text())
    assert record["name"] == folder.name
    assert record["parity"]["text_cosine_min"] >= 0.9999 and record["parity"]["image_cosine_min"] >= 0.9999
    tokenizer = json.loads((folder / "textual" / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "Unigram" and tokenizer["padding"] is None
    assert json.loads((folder / "textual" / "tokenizer_config.json").read_text()) == {"pad_token": "<pad>"}
    clip = ClipModel(folder)
    ids = clip.tokenize(["고양이가 소파에서", "ein Hund am Strand"])
    assert ids.shape == (2, 77)
    for row in ids:
        used = row[row != 1]  # <pad> is 1 in XLM-RoBERTa
        assert used[0] == 0 and used[-1] == 2 and 3 not in used  # <s> … </s>, no <unk>: the words are known
        assert (row[len(used):] == 1).all()


def test_german_and_korean_queries_search_by_likeness(env: Env, multilingual: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from pixdex.indexer.catalog.rows import blob_vector
    from pixdex.indexer.embedder import ClipModel

    make_library(env.pics)
    write_config(env.config, multilingual, [env.pics])
    env.config.write_text(env.config.read_text().replace('clip = "pixdex-standin-clip"',
                                                         'clip = "pixdex-standin-multilingual-clip"'))
    env.index_json(capsys)
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    vectors = {int(i): blob_vector(v) for i, v in db.execute("SELECT image_id, vector FROM embeddings")}
    paths = {int(i): p.decode() for i, p in db.execute("SELECT id, path FROM images")}
    clip = ClipModel(multilingual / "clip" / "pixdex-standin-multilingual-clip")
    for query in ("고양이가 소파에서 자고 있다", "ein Hund am Strand"):
        status, out, err = env.cli("search", query, "--json", "-k", "9", capsys=capsys)
        assert status == 0, err
        hits = json.loads(out)["hits"]
        text = clip.embed_texts([query])[0]
        expected = sorted(vectors, key=lambda i: -float(vectors[i] @ text))
        by_likeness = sorted((h for h in hits if h["vector_rank"] is not None), key=lambda h: h["vector_rank"])
        assert [h["path"] for h in by_likeness] == [paths[i] for i in expected]
        assert np.isclose(by_likeness[0]["vector_score"], float(vectors[expected[0]] @ text), atol=2e-3)
