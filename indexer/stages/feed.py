"""Stage one: the queue's next entries, most urgent first (asked > new/changed > backfill), never one already in
flight nor one parked (`parking`); at most two windows of work in flight."""

from __future__ import annotations

from pixdex.indexer.stages.flow import Flow, Inbox, send_stop
from pixdex.indexer.stages.work import Work


class Feed(Flow):
    def feed(self, _inbox: Inbox, outbox: Inbox) -> None:
        while not self._stopping.is_set():
            with self._inflight_lock:
                room = self._window * 2 - len(self.inflight)
                skip = set(self.inflight)
            if self.paused.is_set():
                self._wake.wait(0.25)
                self._wake.clear()
                continue
            with self._queue_lock:
                skip |= self.parking.waiting(self._queue_db.paths)
                entries = self._queue_db.queued(room, skip) if room > 0 and self.fatal is None else []
            if not entries:
                self._wake.wait(0.25)
                self._wake.clear()
                continue
            with self._inflight_lock:
                self.inflight.update(e.row.id for e in entries)
            for entry in entries:
                if not self._put(outbox, Work(entry)):
                    break
        send_stop(outbox)
