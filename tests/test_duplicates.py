"""Copies and near-copies: 12 planted groups (the photo, an exact copy, a half-size copy, a quality-40 re-encode, a
3%-cropped PNG) among 24 other photos, half of them in the same colours as a planted one — every planted pair is
found, no two different photos are grouped; the keeper is the original, with its reason; the hashes of a library
indexed before pixdex hashed images are filled in without re-embedding."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from photos import planted_copies, scene
from PIL import Image

from pixdex.query.duplicates import candidate_pairs
from pixdex.query.keeper import choose

PLANTED, OTHERS = 12, 24


def plant(folder: Path) -> dict[str, int]:
    """The library: path → which photo it is (planted groups 0–11, other photos 100 and up)."""
    which: dict[str, int] = {}
    for g in range(PLANTED):
        for path in planted_copies(scene(g, palette=g // 2), folder, f"planted{g:02d}"):
            which[str(path)] = g
    for n in range(OTHERS):
        seed = 100 + n
        path = folder / f"other{seed}.jpg"
        # Half of them in the colours of a planted photo: alike colours, different photos.
        scene(seed, palette=n // 2 if n % 2 else None).save(path, quality=90)
        which[str(path)] = seed
    return which


def check_groups(found: dict[str, object], which: dict[str, int]) -> None:
    groups = found["groups"]
    assert isinstance(groups, list)
    for group in groups:
        photos = {which[item["path"]] for item in group["items"]}
        assert len(photos) == 1, f"different photos grouped: {[i['path'] for i in group['items']]}"
        assert group["keeper"] in {item["id"] for item in group["items"]} and group["why"]
    grouped = {item["path"]: n for n, g in enumerate(groups) for item in g["items"]}
    for g in range(PLANTED):
        members = [p for p, w in which.items() if w == g]
        missing = [p for p in members if p not in grouped]
        assert not missing, f"planted copies not found: {missing}"
        assert len({grouped[p] for p in members}) == 1, f"planted group {g} split"
    assert not [p for p, w in which.items() if w >= 100 and p in grouped]
    assert len(groups) == PLANTED


def test_every_planted_copy_is_found_and_no_two_photos_are_grouped(env, capsys) -> None:  # type: ignore[no-untyped-def]
    which = plant(env.pics)
    report = env.index_json(capsys)
    assert report["hashed"] == 0  # each hashed by its decode, none left for the backfill to decode again
    status, out, err = env.cli("duplicates", "--json", capsys=capsys)
    assert status == 0, err
    found = json.loads(out)
    check_groups(found, which)
    for group in found["groups"]:
        keeper = next(i for i in group["items"] if i["id"] == group["keeper"])
        assert keeper["path"].endswith(".jpg") and keeper["width"] == 640, group  # not the half, not the PNG
        assert "-half" not in keeper["path"] and "-crop" not in keeper["path"]


def test_filters_narrow_the_groups_and_words_are_refused(env, capsys) -> None:  # type: ignore[no-untyped-def]
    (env.pics / "a").mkdir()
    (env.pics / "b").mkdir()
    planted_copies(scene(1), env.pics / "a", "one")
    planted_copies(scene(2), env.pics / "b", "two")
    env.index_json(capsys)
    status, out, err = env.cli("duplicates", "--json", f"folder:{env.pics / 'a'}", capsys=capsys)
    assert status == 0, err
    groups = json.loads(out)["groups"]
    assert len(groups) == 1 and all("/a/" in i["path"] for i in groups[0]["items"])
    status, _out, err = env.cli("duplicates", "sunset", capsys=capsys)
    assert status == 2 and "filters only" in err and "sunset" in err
    status, _out, err = env.cli("duplicates", "--threshold", "200", capsys=capsys)
    assert status == 2 and "--threshold 200" in err


def test_a_library_indexed_before_hashes_is_hashed_without_re_embedding(env, capsys) -> None:  # type: ignore[no-untyped-def]
    which = plant(env.pics)
    env.index_json(capsys)
    catalog = env.data / "catalog.sqlite3"
    with sqlite3.connect(catalog) as db:
        db.execute("DELETE FROM phashes")  # as a library indexed before pixdex hashed images
        embedded = db.execute("SELECT image_id, vector FROM embeddings ORDER BY image_id").fetchall()
    status, out, err = env.cli("duplicates", "--json", capsys=capsys)
    assert status == 0 and f"{len(which)} image(s) are not hashed yet" in err
    # Byte-identical copies are found by their content hash alone, the near-copies need their hashes.
    assert sorted(len(g["items"]) for g in json.loads(out)["groups"]) == [2] * PLANTED
    report = env.index_json(capsys)
    assert (report["hashed"], report["decoded"], report["embedded"]) == (len(which), 0, 0)  # no model ran
    with sqlite3.connect(catalog) as db:
        assert db.execute("SELECT count(*) FROM phashes").fetchone()[0] == len(which)
        assert db.execute("SELECT image_id, vector FROM embeddings ORDER BY image_id").fetchall() == embedded
    status, out, err = env.cli("duplicates", "--json", capsys=capsys)
    check_groups(json.loads(out), which)


def test_candidate_pairs_compare_every_pair_across_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixdex.query.duplicates as duplicates

    monkeypatch.setattr(duplicates, "TILE", 7)
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, 50, dtype=np.int64).view(np.uint64)
    hashes[40] = hashes[2] ^ np.uint64(0b1011)  # 3 bits apart, in other tiles
    hashes[5] = hashes[3] ^ np.uint64(0b110)  # 2 bits apart, in one tile
    i, j = candidate_pairs(hashes, 3)
    brute = {(a, b) for a, b in itertools.combinations(range(50), 2)
             if bin(int(hashes[a]) ^ int(hashes[b])).count("1") <= 3}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == brute and {(2, 40), (3, 5)} <= brute


def test_a_real_models_embeddings_confirm_each_pair_and_similar_shots_need_one(env, capsys) -> None:  # type: ignore[no-untyped-def]
    from pixdex.indexer.catalog import Catalog
    from pixdex.query.duplicates import Limits, find

    planted_copies(scene(1), env.pics, "one")
    scene(50).save(env.pics / "two.jpg")
    env.index_json(capsys)
    status, out, err = env.cli("duplicates", "--json", "--similar", capsys=capsys)
    assert status == 0 and json.loads(out)["similar"] == [] and "similar shots need a real CLIP model" in err
    catalog = Catalog(env.data / "catalog.sqlite3", read_only=True)
    try:
        live = catalog.live_model()
        assert live is not None
        assert [len(g["items"]) for g in find(catalog, None, Limits(), None)["groups"]] == [5]
        # Embeddings that refute every pair (a cosine above 1 is never reached): only the byte-identical copy stays.
        refuted = find(catalog, None, Limits(cosine=1.01), live)["groups"]
        assert [sorted(Path(i["path"]).name for i in g["items"]) for g in refuted] == [["one copy.jpg", "one.jpg"]]
        shots = find(catalog, None, Limits(similar=-1.0), live, similar=True)["similar"]
        # Any two alike: the copies left out, the keeper stands for its group beside the other photo.
        assert [sorted(Path(i["path"]).name for i in g["items"]) for g in shots] == [["one.jpg", "two.jpg"]]
    finally:
        catalog.close()


def test_the_keeper_is_the_largest_then_the_original_format_then_the_oldest_then_the_curated() -> None:
    from pixdex.indexer.catalog.rows import ImageRow

    def row(image_id: int, name: str, size: tuple[int, int], mtime: int, facts: str = "{}") -> ImageRow:
        return ImageRow(image_id, f"/p/{name}".encode(), 1, image_id, 1000, mtime, "h", "done", None, None, None,
                        size[0], size[1], None, None, "[]", "", None, 0.0, 0.0, 1, facts=facts)

    big, half = row(1, "b.png", (640, 480), 9), row(2, "a.jpg", (320, 240), 1)
    assert choose([half, big]) == (big, "the most pixels (640×480)")
    jpeg, png = row(3, "x.jpg", (640, 480), 9), row(4, "x.png", (640, 480), 1)
    assert choose([png, jpeg]) == (jpeg, "the original format (JPG), the others were converted")
    old, new = row(5, "copy of y.jpg", (640, 480), 10**18), row(6, "y.jpg", (640, 480), 2 * 10**18)
    assert choose([new, old])[0] == old and choose([new, old])[1].startswith("the oldest file (2001-09-09)")
    rated, plain = row(7, "rated z.jpg", (640, 480), 5, '{"rating": 3}'), row(8, "z.jpg", (640, 480), 5)
    assert choose([plain, rated]) == (rated, "you rated it or gave it keywords")
    assert choose([row(9, "w (2).jpg", (1, 1), 5), row(10, "w.jpg", (1, 1), 5)])[0].id == 10  # the shorter name


def test_a_chain_of_close_pairs_never_groups_images_far_from_their_keeper(env, capsys) -> None:  # type: ignore[no-untyped-def]
    """Found by a trial: six different text pages, each close to the next, became one group (the ends 90 bits
    apart) — and "keep this one, trash the others" would have trashed five different pages. Four images whose
    256-bit hashes step 40 bits at a time (the ends 120 apart): every group holds only images within the limit of
    its keeper."""
    for n in range(4):
        scene(300 + n).save(env.pics / f"page{n}.jpg", quality=90)
    env.index_json(capsys)
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    ids = [i for (i,) in db.execute("SELECT id FROM images ORDER BY path")]
    base = 0
    for step, image_id in enumerate(ids):
        long = base ^ ((1 << (40 * step)) - 1)  # the first 40 × step bits flipped: 40 between neighbours
        db.execute("UPDATE phashes SET phash = ? WHERE image_id = ?", (bytes(8) + long.to_bytes(32, "big"), image_id))
    db.commit()
    db.close()
    status, out, err = env.cli("duplicates", "--json", capsys=capsys)
    assert status in (0, 1), err
    groups = json.loads(out)["groups"] if status == 0 else []
    assert groups, "the close pairs are duplicates of their keeper"
    for group in groups:
        assert all(item["distance"] <= 64 for item in group["items"]), group


CORPUS = Path("/work/shared/corpus/exiftool")
BLANK_SAMPLES = ("Apple.jpg", "Canon.jpg", "Nikon.jpg", "GPS.jpg")  # 8×8 white frames and a 120×80 black one


def plant_featureless(folder: Path) -> dict[str, str]:
    """Flat colours, gradients (one turned 180°) and the camera samples' blank frames: name → what it shows. Only
    `red.jpg` and its byte-identical copy are one picture; `red.png` is the same red, converted: nothing in its
    pixels tells one red frame from another, so it is not grouped."""
    shows: dict[str, str] = {}
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220)), ("white", (255, 255, 255)),
                         ("black", (0, 0, 0))):
        Image.new("RGB", (640, 480), colour).save(folder / f"{name}.jpg", quality=90)
        shows[f"{name}.jpg"] = name
    (folder / "red copy.jpg").write_bytes((folder / "red.jpg").read_bytes())
    shows["red copy.jpg"] = "red"
    Image.open(folder / "red.jpg").save(folder / "red.png")
    shows["red.png"] = "red, converted"
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 640)[None, :, None], (480, 1, 3)).astype(np.uint8))
    for name, image in (("gradient", ramp), ("gradient turned", ramp.rotate(180)),
                        ("gradient down", ramp.rotate(90, expand=True))):
        image.save(folder / f"{name}.jpg", quality=90)
        shows[f"{name}.jpg"] = name
    for name in BLANK_SAMPLES:
        if (CORPUS / name).is_file():  # the exiftool corpus, read in place (it is not the repository's)
            (folder / name).write_bytes((CORPUS / name).read_bytes())
            shows[name] = name
    return shows


def test_flat_and_smooth_images_are_never_grouped_while_a_photos_copies_are(env, capsys) -> None:  # type: ignore[no-untyped-def]
    """Found by a trial: flat red, flat blue, a gradient, that gradient turned 180° and the camera samples' blank
    frames became one group (their DCT hashes are all but the same). Now only byte-identical files among them are;
    the copies of a photo (half size, quality 40, PNG, WebP, 3% cropped, exact) are one group still — also after
    the hashes of a library from before detail was measured are done again, without re-embedding."""
    shows = plant_featureless(env.pics)
    photo = scene(7)
    photo.save(env.pics / "photo.jpg", quality=92)
    (env.pics / "photo copy.jpg").write_bytes((env.pics / "photo.jpg").read_bytes())
    photo.resize((320, 240), Image.Resampling.LANCZOS).save(env.pics / "photo-half.jpg", quality=90)
    photo.save(env.pics / "photo-q40.jpg", quality=40)
    photo.save(env.pics / "photo.png")
    photo.save(env.pics / "photo.webp")
    dx, dy = round(photo.width * 0.03), round(photo.height * 0.03)
    photo.crop((dx, dy, photo.width - dx, photo.height - dy)).save(env.pics / "photo-crop.jpg", quality=92)
    photos = sorted(p.name for p in env.pics.glob("photo*"))
    expected = sorted([photos, ["red copy.jpg", "red.jpg"]])
    assert len(shows) >= 12

    def check() -> None:
        status, out, err = env.cli("duplicates", "--json", capsys=capsys)
        assert status == 0, err
        groups = sorted(sorted(Path(i["path"]).name for i in g["items"]) for g in json.loads(out)["groups"])
        assert groups == expected
        assert f"{len(shows)} image(s) have too little detail" in err

    env.index_json(capsys)
    check()
    with sqlite3.connect(env.data / "catalog.sqlite3") as db:  # as hashed before schema 12 measured their detail
        db.execute("UPDATE phashes SET detail = NULL")
        embedded = db.execute("SELECT image_id, vector FROM embeddings ORDER BY image_id").fetchall()
    report = env.index_json(capsys)
    assert (report["hashed"], report["decoded"], report["embedded"]) == (len(shows) + len(photos), 0, 0)
    with sqlite3.connect(env.data / "catalog.sqlite3") as db:
        assert db.execute("SELECT image_id, vector FROM embeddings ORDER BY image_id").fetchall() == embedded
    check()


def test_detail_tells_a_photo_from_flat_and_smooth_images() -> None:
    from pixdex.indexer.phash import detail
    from pixdex.query.duplicates import MIN_DETAIL

    ramp = np.tile(np.linspace(0, 255, 640)[None, :], (480, 1)).astype(np.uint8)
    featureless = [Image.new("L", (640, 480), 128), Image.fromarray(ramp), Image.fromarray(ramp.T.copy())]
    assert max(detail(image) for image in featureless) < 20
    dark, foggy = (Image.fromarray((np.asarray(scene(3), dtype=np.float64) * a + b).astype(np.uint8)).convert("L")
                   for a, b in ((0.15, 0), (0.2, 180)))
    assert min(detail(image) for image in (scene(3).convert("L"), dark, foggy)) > MIN_DETAIL + 30


def test_migration_12_leaves_the_hashes_from_before_to_be_done_again(tmp_path: Path) -> None:
    """Hashes stored before their detail was measured count as none (the backfill does them again); content that
    could not be decoded (an empty hash) is not tried again."""
    from pixdex.indexer.catalog import Catalog

    path = tmp_path / "catalog.sqlite3"
    Catalog(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("ALTER TABLE phashes DROP COLUMN detail; PRAGMA user_version = 11;")  # as schema 11 left it
    for n in (1, 2):
        db.execute("INSERT INTO images (id, path, dev, ino, size, mtime_ns, hash, state, created, updated) "
                   "VALUES (?, ?, 1, ?, 1, 1, ?, 'done', 0, 0)", (n, f"/p/{n}.jpg".encode(), n, f"h{n}"))
    db.executemany("INSERT INTO phashes VALUES (?, ?, ?)", [(1, "h1", bytes(40)), (2, "h2", b"")])
    db.close()
    catalog = Catalog(path)
    try:
        assert catalog.db.execute("SELECT image_id, detail FROM phashes ORDER BY image_id").fetchall() == [(1, None),
                                                                                                          (2, 0)]
        assert catalog.phashes() == [] and catalog.unhashed_count() == 1
        assert [(i, p) for i, p, _ in catalog.unhashed(10)] == [(1, b"/p/1.jpg")]
    finally:
        catalog.close()
