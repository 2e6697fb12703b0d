"""Stage one: the queue's next entries, most urgent first (asked > new/changed > backfill), never one already in
flight nor one parked (`parking`); at most two windows of work in flight.

It does not poll: it looks at the queue when woken (`Pipeline.wake`: the scanner queued work, a commit landed,
entries left the flight, pause ended) and, while entries are parked, when the next one's grace ends."""

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
                self._starved = True  # nothing is fed
                self._sleep(None)
                continue
            with self._queue_lock:
                skip |= self.parking.waiting(self._queue_db.paths)
                entries = self._queue_db.queued(room, skip) if room > 0 and self.fatal is None else []
            self._starved = not entries
            if not entries:
                self._sleep(self.parking.next_look())
                continue
            with self._inflight_lock:
                self.inflight.update(e.row.id for e in entries)
                self._upstream += len(entries)
            for entry in entries:
                if not self._put(outbox, Work(entry)):
                    break
        send_stop(outbox)

    def _sleep(self, timeout: float | None) -> None:
        """Until woken (or `timeout` seconds, for parked entries)."""
        self._wake.wait(timeout)
        self._wake.clear()
