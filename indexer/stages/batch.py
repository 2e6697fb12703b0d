"""Stage three: group images for the model — flush on `models.batch_size`, once the first has waited
`pipeline.batch_wait`, or at once when nothing else was fed that could join it (a single new file)."""

from __future__ import annotations

import queue
import time

from pixdex.indexer.stages.flow import Flow, Inbox, send_stop
from pixdex.indexer.stages.work import STOP, Work


class Batch(Flow):
    def batch(self, inbox: Inbox, outbox: Inbox) -> None:
        size, wait = self.config.models.batch_size, self.config.pipeline.batch_wait
        current: list[Work] = []
        deadline = 0.0
        while True:
            try:
                item = inbox.get(timeout=max(0.0, deadline - time.monotonic()) if current else None)
            except queue.Empty:
                item = None
            if item is STOP:
                break
            alone = False
            if item is not None:
                if not current:
                    deadline = time.monotonic() + wait
                current.append(item)
                with self._inflight_lock:
                    self._upstream -= 1
                    alone = self._upstream <= 0 and inbox.empty()
            if current and (len(current) >= size or alone or time.monotonic() >= deadline):
                if not self._put(outbox, current):
                    current = []  # stopping: what it held stays queued in the catalog
                    break
                current = []
        if current:
            self._put(outbox, current)
        send_stop(outbox)  # however it ends: the next stage waits on its inbox for this
