"""`pixdex check`: do the catalog, both indexes, the sidecars and the files on disk agree?

Read-only: it opens the catalog and the text index for reading, loads the saved vector file and reads
every indexed image's sidecar. Each disagreement is one `Finding` with the image, the store that
disagrees and what is wrong. `repair` (``--fix``) hands them to the indexing core: files that changed
or left are rescanned, images whose sidecar disagrees are queued for a sidecar merge (no decode, no
model), and an index that disagrees is rebuilt from the catalog (no model either).

The vector file is a cache saved every `index.save_seconds`: only rows committed before its saved
generation are expected in it (newer ones are in the catalog and every reader sees them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config

KINDS = ("disk", "catalog", "text index", "vector index", "sidecar")


@dataclass(frozen=True)
class Finding:
    kind: str  # one of KINDS: the store that disagrees with the catalog
    path: str
    problem: str
    image_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(config: Config, folders: list[bytes]) -> list[Finding]:
    """Every disagreement between the catalog and the disk, the text index, the vector file and the sidecars."""
    layout = config.layout
    if not layout.exists():
        return []
    catalog = Catalog(layout.catalog, read_only=True)
    try:
        model = catalog.live_model() or catalog_model(layout)  # the vector file holds the live model's
        rows = catalog.all_rows()
        queued = catalog.queued_ids()
        models = {m for m in [model, *(r.clip_model for r in rows)] if m}  # two while a new model re-embeds
        embeddings = {m: dict(catalog.embeddings(m)) for m in models}
        findings = [*_disk(rows, queued, catalog, folders, config), *_text(layout, rows),
                    *_vectors(layout, catalog, rows, embeddings.get(model or "", {})),
                    *_sidecars(config, rows, queued, embeddings), *_orphans(config, folders, catalog)]
    finally:
        catalog.close()
    return findings


def catalog_model(layout: Any) -> str | None:
    from pixdex.indexer.vectors import read_manifest

    manifest = read_manifest(layout)
    return str(manifest["model"]) if manifest and manifest.get("model") else None


def _disk(rows: list[ImageRow], queued: set[int], catalog: Catalog, folders: list[bytes],
          config: Config) -> Iterator[Finding]:
    from pixdex.indexer.scan.diff import diff_tree

    for row in rows:
        if row.id in queued:
            continue  # waiting for the indexer: not a disagreement
        try:
            on_disk = os.stat(row.path)
        except FileNotFoundError:
            yield Finding("disk", display_path(row.path), "in the catalog, but gone from disk", row.id)
            continue
        except OSError as exc:
            yield Finding("disk", display_path(row.path), f"cannot be read ({exc.strerror})", row.id)
            continue
        if (on_disk.st_size, on_disk.st_mtime_ns) != (row.size, row.mtime_ns):
            yield Finding("disk", display_path(row.path), "changed on disk since it was indexed", row.id)
    if folders:
        diff = diff_tree(catalog, folders, config.library.skip_dirs, config.library.follow_symlinks, ("", None),
                         exclude=config.library.exclude)
        for st in diff.new:
            yield Finding("catalog", display_path(st.path), "on disk in a watched folder, but not in the catalog")
        for path, reason in diff.errors:
            if reason.startswith("cannot list folder"):
                yield Finding("disk", display_path(path), f"{reason}: what changed in it is not indexed")
    listed_now = {p for p, r in (diff.errors if folders else []) if r.startswith("cannot list folder")}
    for path, reason in catalog.folder_errors():
        if path not in listed_now:  # unreadable when last scanned, readable now: what changed meanwhile was missed
            yield Finding("disk", display_path(path), f"could not be read when last scanned ({reason}); it must be "
                                                      "scanned again")


def _text(layout: Any, rows: list[ImageRow]) -> Iterator[Finding]:
    import tantivy

    from pixdex.indexer.fulltext import open_for_reading

    done = {r.id: r for r in rows if r.state == "done"}
    index = open_for_reading(layout)
    if index is None:
        if done:
            yield Finding("text index", str(layout.fulltext), "missing, or of another schema: nothing is searchable "
                                                              "as text")
        return
    searcher = index.searcher()
    result = searcher.search(tantivy.Query.all_query(), max(1, searcher.num_docs + 10))
    from pixdex.indexer.fulltext import doc_of_row, nfc, read_manifest

    synced = read_manifest(layout)["generation"]  # rows committed after it reach the text index a moment later

    seen: dict[int, str] = {}
    keywords: dict[int, str] = {}
    for _score, address in result.hits:
        doc = searcher.doc(address)
        image_id, path = int(doc["id"][0]), str(doc["path"][0])
        if image_id in seen:
            yield Finding("text index", path, "indexed twice", image_id)
        seen[image_id] = path
        stored = doc["tags"]
        keywords[image_id] = str(stored[0]) if stored else ""
    for image_id, row in done.items():
        if image_id not in seen:
            yield Finding("text index", display_path(row.path), "indexed in the catalog, missing from the text index",
                          image_id)
        elif seen[image_id] != display_path(row.path):
            yield Finding("text index", display_path(row.path), f"the text index has it at {seen[image_id]}", image_id)
        elif row.gen <= synced and keywords[image_id] != nfc(" ; ".join(doc_of_row(row).tags)):
            yield Finding("text index", display_path(row.path), "the text index has other keywords than the catalog",
                          image_id)
    for image_id in seen.keys() - done.keys():
        yield Finding("text index", seen[image_id], "in the text index, but not an indexed image in the catalog",
                      image_id)


def _vectors(layout: Any, catalog: Catalog, rows: list[ImageRow], embeddings: dict[int, Any]) -> Iterator[Finding]:
    """The saved vector file against the catalog, up to the generation it was saved at: what was committed
    since (a running daemon saves every `index.save_seconds`) is not a disagreement."""
    import numpy as np
    from usearch.index import Index

    from pixdex.indexer.vectors import read_manifest

    manifest = read_manifest(layout)
    if manifest is None:  # never saved yet: readers search the catalog's embeddings exactly meanwhile
        return
    if not layout.vector_file.exists():
        yield Finding("vector index", str(layout.vector_file), "the vector file is missing (its manifest is there)")
        return
    saved = int(manifest.get("generation", 0))
    deleted_since = set(catalog.changed_since(saved)[1])
    try:
        index = Index.restore(str(layout.vector_file), view=True)
    except Exception as exc:  # noqa: BLE001 - usearch raises plain errors on a broken file
        yield Finding("vector index", str(layout.vector_file), f"unreadable ({exc})")
        return
    if index is None:
        yield Finding("vector index", str(layout.vector_file), "unreadable")
        return
    keys = {int(k) for k in index.keys} if len(index) else set()
    by_id = {r.id: r for r in rows}
    for image_id, vector in embeddings.items():
        row = by_id.get(image_id)
        if row is None or row.state != "done" or row.gen > saved:
            continue
        if image_id not in keys:
            yield Finding("vector index", display_path(row.path), "embedded in the catalog, missing from the vector "
                                                                  "file", image_id)
            continue
        stored = np.asarray(index.get(np.uint64(image_id)), dtype=np.float32).reshape(-1)
        if _cosine(stored, vector) < 0.999:
            yield Finding("vector index", display_path(row.path), "its vector differs from the catalog's", image_id)
    for image_id in keys - embeddings.keys():
        row = by_id.get(image_id)
        if (row is None and image_id not in deleted_since) or (row is not None and row.gen <= saved):
            yield Finding("vector index", display_path(row.path) if row else f"id {image_id}",
                          "in the vector file, but has no embedding in the catalog", image_id)


def _sidecars(config: Config, rows: list[ImageRow], queued: set[int], embeddings: dict[str, dict[int, Any]]
              ) -> Iterator[Finding]:
    from pathlib import Path

    from pixdex.indexer.metadata.reconcile import as_list
    from pixdex.indexer.sidecars.embedding import read_embedding
    from pixdex.indexer.sidecars.keys import EMBEDDING_MODEL, EMBEDDING_OF, MACHINE, REJECTED
    from pixdex.indexer.sidecars.naming import folder_names, siblings, sidecar_name_of
    from pixdex.indexer.sidecars.read import read_props, state_of

    settings = config.sidecar
    listings: dict[bytes, tuple[set[bytes], Any]] = {}  # each folder listed once
    for row in rows:
        if row.state != "done" or row.id in queued:
            continue
        folder, name = os.path.split(row.path)
        if folder not in listings:
            names = folder_names(folder)
            listings[folder] = (names, siblings(names))
        found = sidecar_name_of(name, *listings[folder])
        machine = [str(t["name"]) for t in row.machine_tags]
        if found is None:
            if row.side is not None:
                yield Finding("sidecar", display_path(row.path), "the catalog read a sidecar that is gone", row.id)
            elif machine and settings.write and not row.sidecar_error:
                yield Finding("sidecar", display_path(row.path), "has machine keywords but no sidecar", row.id)
            continue
        side = Path(os.fsdecode(os.path.join(folder, found)))
        try:
            data = side.read_bytes()
            xmp = read_props(data)
        except Exception as exc:  # noqa: BLE001 - any unreadable sidecar is a finding, not a crash
            yield Finding("sidecar", display_path(side), f"unreadable ({exc})", row.id)
            continue
        state = state_of(side, xmp, settings.tag_parent, data=data)
        if state.signature != row.side or (row.side_hash and state.digest != row.side_hash):
            yield Finding("sidecar", display_path(side), "changed since pixdex read it", row.id)
            continue
        written = set(as_list(xmp.get(MACHINE)))
        missing = [t for t in machine if t not in written and t not in {p["name"] for p in state.person}]
        if settings.write and missing and not row.sidecar_error:
            yield Finding("sidecar", display_path(side), f"lacks machine keyword(s) {', '.join(missing[:5])}", row.id)
        rejected = set(as_list(xmp.get(REJECTED)))
        unknown = sorted(written - set(machine) - rejected) if row.clip_model else []
        if settings.write and unknown and not row.sidecar_error:
            yield Finding("sidecar", display_path(side), f"machine keyword(s) {', '.join(unknown[:5])} are not in the "
                                                         "catalog", row.id)
        of = str(xmp.get(EMBEDDING_OF) or "")
        if of and row.hash and of != row.hash and str(xmp.get(EMBEDDING_MODEL) or "") == row.clip_model:
            yield Finding("sidecar", display_path(side), "carries the embedding of other content than the image's "
                                                         f"(pixdex:EmbeddingOf {of[:12]}…, the catalog has "
                                                         f"{row.hash[:12]}…)", row.id)
        person = {p["name"] for p in state.person}
        indexed = {str(t["name"]) for t in row.tag_list if t.get("source") == "sidecar"}
        if person != indexed:
            yield Finding("sidecar", display_path(side), "its keywords differ from those indexed "
                                                         f"({', '.join(sorted(person ^ indexed)[:5])})", row.id)
        stored = read_embedding(xmp, row.clip_model or "", row.hash or "")
        own = embeddings.get(row.clip_model or "", {})
        if stored is not None and row.id in own and _cosine(stored, own[row.id]) < 0.999:
            yield Finding("sidecar", display_path(side), "its embedding differs from the catalog's", row.id)


def _orphans(config: Config, folders: list[bytes], catalog: Catalog) -> Iterator[Finding]:
    """Sidecars pixdex alone wrote whose image is gone (a crash between a deletion and their removal)."""
    for sidecar in orphan_sidecars(config, folders):
        yield Finding("sidecar", display_path(sidecar), "the sidecar of an image that is gone, written by pixdex alone")


def orphan_sidecars(config: Config, folders: list[bytes]) -> list[bytes]:
    """Every sidecar in the watched folders that belongs to no file there (no `IMG.jpg` for `IMG.jpg.xmp`, no
    file of stem `IMG` for `IMG.xmp`) nor to one in the trash (restored alone, it waits for its image), and holds
    nothing but pixdex's own keywords and bookkeeping."""
    from pathlib import Path

    from pixdex.indexer.sidecars.moves import only_ours
    from pixdex.indexer.trash import trashed

    binned = {(os.path.dirname(p), os.path.basename(p).lower()) for p in trashed(folders)}
    binned |= {(d, os.path.splitext(n)[0]) for d, n in binned}
    found = []
    for root in folders:
        for directory, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(b".")]
            others = {n.lower() for n in [*files, *dirs] if not n.lower().endswith(b".xmp")}  # names: any case
            stems = {os.path.splitext(n)[0] for n in others}
            for name in files:
                if not name.lower().endswith(b".xmp"):
                    continue
                image = name[:-4].lower()
                if image in others or image in stems or (directory, image) in binned:
                    continue
                path = os.path.join(directory, name)
                if only_ours(Path(os.fsdecode(path)), config.sidecar.tag_parent):
                    found.append(path)
    return found


def _cosine(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def repair(config: Config, findings: list[Finding], folders: list[bytes]) -> None:
    """Make the stores agree again, through the indexing core (it takes the data directory's lock): rescan
    the folders (files changed, gone or new), merge and re-read the sidecars that disagree, and rebuild an
    index that disagrees from the catalog. No model runs for what the catalog already holds."""
    from pathlib import Path

    from pixdex.indexer.catalog.rows import CHANGED
    from pixdex.indexer.core import Indexer

    kinds = {f.kind for f in findings}
    _drop_orphans(config, folders, findings)
    with Indexer(config) as indexer:
        writer = indexer.writer

        def rebuild(_catalog: Catalog, _gen: int) -> None:  # runs in the writer thread
            if "text index" in kinds:
                writer.fulltext.clear()
                writer.fulltext.generation = 0
            if "vector index" in kinds and writer.vectors is not None:
                writer.vectors.generation = 0
                writer.vectors.saved_generation = -1  # saved again even if the catalog did not move

        writer.submit(rebuild)
        ids = sorted({f.image_id for f in findings if f.kind == "sidecar" and f.image_id is not None})
        if ids:
            writer.enqueue(ids, CHANGED, "sidecar changed", again=True)
        writer.flush()
        if kinds & {"disk", "catalog"}:
            indexer.scan([Path(os.fsdecode(f)) for f in folders])
        indexer.drain()


def _drop_orphans(config: Config, folders: list[bytes], findings: list[Finding]) -> None:
    """Remove the orphaned sidecars found (looked at again: each must still be pixdex's alone and without image)."""
    reported = {f.path for f in findings if f.kind == "sidecar" and f.image_id is None}
    for path in orphan_sidecars(config, folders):
        if display_path(path) in reported:
            os.unlink(path)
