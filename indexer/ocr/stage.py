"""The OCR stage: a thread of the indexing process that reads the text in indexed images, one at a time, when
the pipeline has nothing to do (an image is searchable by everything else first).

  OCR worker:  `engine.read_text` — its own process, at the lowest CPU priority (SCHED_IDLE) with one
               onnxruntime thread, so indexing and queries never wait for it
  decode pool: the text into the sidecar (`pixdex:TextOCR`, `pixdex:Text`)
  writer:      `text_read`: the text joins the text index (its own field, `text:`)

With `[ocr] clip_gate` (and a real CLIP model), an image whose stored CLIP embedding is less similar than that
to "text, document, screenshot, sign" (`gate.ClipGate`) is recorded as read, with no text and its similarity,
without a call to the OCR model.

An image that cannot be read (undecodable, a worker that died on it, past `[ocr] timeout`) is recorded with
the reason and not tried again until it changes, a reindex asks for it, or the reader (model or settings)
changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from pebble import ProcessExpired

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.errors import PixdexError, ReadError
from pixdex.indexer.ocr.engine import OcrSpec, TextRead, read_text
from pixdex.indexer.ocr.gate import ClipGate
from pixdex.indexer.ocr.identity import reader_id
from pixdex.indexer.paths import display_path
from pixdex.indexer.pools import Pool, exit_reason
from pixdex.indexer.sections import OcrSettings
from pixdex.indexer.sidecars.keeper import outcome
from pixdex.indexer.sidecars.state import SidecarState

log = logging.getLogger(__name__)

IDLE = 1.0  # seconds between looks for work when there is none, or while the pipeline is busy


class OcrStage:
    """The OCR stage of an open core. `write(path, text)` writes the sidecar (decode pool); `record(...)` is the
    writer's `text_read`; `busy()` says the pipeline has work (the stage waits), `paused()` the pause."""

    def __init__(self, settings: OcrSettings, max_pixels: int, catalog_path: Path, pool: Pool,
                 write: Callable[[bytes, str, tuple[str, str]], Future[SidecarState]],
                 record: Callable[..., Future[Any]],
                 busy: Callable[[], bool], paused: Callable[[], bool],
                 listener: Callable[[str, dict[str, Any]], None] | None = None,
                 gate: tuple[ClipGate, str] | None = None) -> None:
        self.settings = settings
        self.spec = OcrSpec.of(settings, max_pixels)
        self.id = reader_id(settings)
        self.catalog_path = catalog_path
        self.pool, self.write, self.record, self.busy, self.paused = pool, write, record, busy, paused
        self.listener = listener
        self.gate = gate  # the gate and the CLIP model whose stored embeddings it compares
        self.gated = 0
        self.state = "starting"
        self.current = ""
        self.done = 0
        self.failed = 0
        self.cpu_ms = 0.0
        self._stop = threading.Event()
        self._future: Future[TextRead] | None = None  # the read in the worker
        self._thread = threading.Thread(target=self._main, name="pixdex-ocr", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop now: the image in hand is dropped (its text is read at the next start)."""
        self._stop.set()
        future = self._future
        if future is not None:
            future.cancel()  # pebble ends the worker's task
        self._thread.join(timeout=30)

    def status(self) -> dict[str, Any]:
        return {"enabled": True, "reader": self.id, "state": self.state, "current": self.current,
                "read": self.done, "failed": self.failed, "skipped_by_clip_gate": self.gated,
                "cpu_ms_per_image": round(self.cpu_ms / self.done, 1) if self.done else None}

    def _main(self) -> None:
        recent: dict[int, float] = {}  # images just recorded, until the writer has surely committed them
        while not self._stop.is_set():
            try:
                if self.paused() or self.busy():
                    self.state = "paused" if self.paused() else "waiting for indexing"
                    self._stop.wait(IDLE)
                    continue
                now = time.monotonic()
                recent = {i: t for i, t in recent.items() if now - t < 30}
                rows = self._next(set(recent))
                if not rows:
                    self.state = "idle"
                    self._stop.wait(IDLE)
                    continue
                recent[rows[0].id] = time.monotonic()
                self._read(rows[0])
            except Exception:
                log.exception("the OCR stage failed; starting it again in 30 s")
                self.state = "waiting"
                self._stop.wait(30)

    def _next(self, skip: set[int]) -> list[Any]:
        catalog = Catalog(self.catalog_path, read_only=True)
        try:
            return catalog.ocr_next(self.id, 1, skip)
        finally:
            catalog.close()

    def _read(self, row: Any) -> None:
        self.state, self.current = "reading", display_path(row.path)
        try:
            if self._gated(row):
                return
            try:
                read = self._text_of(row.path)
            except PixdexError as exc:
                if self._stop.is_set():
                    return  # cut short by stop(): not the image's fault
                self.failed += 1
                log.warning("%s: text not read: %s", display_path(row.path), exc)
                self.record(row.id, self.id, {}, str(exc), None, None).result()
                self._tell({"id": row.id, "path": display_path(row.path), "error": str(exc)})
                return
            # No sidecar is made for no text; an old text is removed. The reader and the content go with it.
            side = outcome(self.write(row.path, read.text, (self.id, read.digest)), row.path)
            self.record(row.id, self.id, {"text": read.text, "lines": read.lines}, None, side, read.digest).result()
            self.done += 1
            self.cpu_ms += read.cpu_ms
            self._tell({"id": row.id, "path": display_path(row.path), "lines": read.lines})
        finally:
            self.current = ""

    def _gated(self, row: Any) -> bool:
        """Whether the CLIP gate keeps `row` from the OCR model: then it is recorded as read, with no text."""
        if self.gate is None:
            return False
        gate, clip_id = self.gate
        catalog = Catalog(self.catalog_path, read_only=True)
        try:
            found = [vector for _id, vector in catalog.embeddings(clip_id, ids=[row.id])]
        finally:
            catalog.close()
        passes, similarity = gate.passes(found[0] if found else None)
        if passes:
            return False
        self.gated += 1
        self.record(row.id, self.id, {"text": "", "lines": 0, "clip_gate": similarity}, None, None, row.hash).result()
        self._tell({"id": row.id, "path": display_path(row.path), "lines": 0, "clip_gate": similarity})
        return True

    def _text_of(self, path: bytes) -> TextRead:
        """The worker's reading; PixdexError with the reason when the image cannot be read."""
        self._future = future = self.pool.schedule(read_text, (path, self.spec), timeout=self.settings.timeout)
        try:
            return future.result()
        except ReadError as exc:
            raise PixdexError(exc.reason) from None
        except ProcessExpired as exc:
            raise PixdexError(f"the OCR process died on this image ({exit_reason(exc.exitcode)})") from None
        except FutureTimeout:
            raise PixdexError(f"reading its text took longer than {self.settings.timeout:g} s ([ocr] timeout)") \
                from None
        except Exception as exc:  # noqa: BLE001 - one image's failure (the model's, on odd input); the stage goes on
            raise PixdexError(f"{type(exc).__name__}: {exc}") from None
        finally:
            self._future = None

    def _tell(self, data: dict[str, Any]) -> None:
        if self.listener is not None:
            try:
                self.listener("ocr", data)
            except Exception:
                log.debug("ocr event not delivered", exc_info=True)
