"""Stage four: the model worker embeds and tags a batch (`inference.infer`). A batch the model fails on is retried
one file at a time before any file is blamed; a model that cannot load (`ModelError`) stops the pipeline and
blames no file: their entries stay queued."""

from __future__ import annotations

import logging
import time

import numpy as np
from pebble import ProcessExpired

from pixdex.indexer import faults
from pixdex.indexer.errors import InferenceError, ModelError
from pixdex.indexer.inference import infer
from pixdex.indexer.paths import display_path
from pixdex.indexer.pools import exit_reason
from pixdex.indexer.stages.flow import Flow, Inbox, send_stop
from pixdex.indexer.stages.work import STOP, Work

log = logging.getLogger(__name__)


class WorkerDied(Exception):
    """The model worker died on a batch (pebble replaced it)."""


class Infer(Flow):
    def infer(self, inbox: Inbox, outbox: Inbox) -> None:
        while (batch := inbox.get()) is not STOP:
            ready = [w for w in batch if w.needs_model]
            if self._stopping.is_set():
                break
            if ready and self.fatal is None:
                self.stats.at["infer"] = display_path(ready[-1].entry.row.path)
                faults.hold("infer", [w.entry.row.path for w in ready])
                start = time.perf_counter()
                try:
                    self._infer(ready)
                except ModelError as exc:  # the model's fault: stop, blame no file, keep them queued
                    self.fatal = exc
                    self._stopping.set()
                self.stats.add_time("infer", time.perf_counter() - start)
                self._stage_done("infer", ready)
            if self.fatal is not None:
                self._release(batch)
                continue
            if not self._put(outbox, batch):
                break
        send_stop(outbox)

    def _infer(self, ready: list[Work]) -> None:
        try:
            self._run_model(ready)
        except (InferenceError, WorkerDied) as exc:
            if len(ready) == 1:
                ready[0].error = str(exc)
                return
            if self._stopping.is_set():
                return
            log.warning("a batch of %d failed (%s); retrying one file at a time", len(ready), exc)
            for work in ready:
                try:
                    self._run_model([work])
                except (InferenceError, WorkerDied) as single:
                    work.error = str(single)

    def _run_model(self, works: list[Work]) -> None:
        clip = np.stack([w.model_input("clip") for w in works])
        tags = np.stack([w.model_input("tagger") for w in works]) if self.info.tagger_size else None
        try:
            result = self._await(self.infer_pool.schedule(infer, (self.spec, clip, tags)))
        except ProcessExpired as exc:
            raise WorkerDied(f"the inference process died on this file ({exit_reason(exc.exitcode)})") from exc
        except InferenceError as exc:
            raise InferenceError(f"model failed on this file: {exc}") from exc
        with self.stats.lock:
            self.stats.embedded += len(works)
            self.stats.tagged += len(works) if tags is not None else 0
            self.stats.inference_calls += result.calls
        for n, work in enumerate(works):
            work.embedding = result.embeddings[n]
            work.tags = result.tags[n]
