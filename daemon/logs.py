"""Logging for `pixdex serve` and its indexing process: journald's `<N>` prefixes under systemd, and a log
that cannot flood.

A message logged again and again from one place (one line of code: one cause) passes `BURST` times a
minute, then is held back and counted; the next one that passes says how many were held back (log-rate-
limit's `StreamRateLimitFilter`, on the handler, so every logger's records go through it). Debug records
are not limited: `pixdex serve -v` shows everything it was asked for. A client's malformed request is
one WARNING line without a traceback (`ClientErrors`, the logger aiohttp's request handler is given):
it is the client's mistake, not the daemon's.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from log_rate_limit import StreamRateLimitFilter

SYSLOG_LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
PERIOD = 60.0  # seconds
BURST = 10  # records one line of code may log per period before the rest are counted instead


class JournalFormatter(logging.Formatter):
    """`<N>` syslog priority prefixes, which journald reads from a service's stderr; no timestamps."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\n    ")
        return f"<{SYSLOG_LEVELS.get(record.levelno, 6)}>{text}"


class RepeatLimit(StreamRateLimitFilter):  # type: ignore[misc]  # log_rate_limit has no type information
    """At most `BURST` records a minute from one line of code (debug records pass); the next one that
    passes carries the count of those held back. Calls are serialised: handlers run filters outside their
    lock, and the library's bookkeeping is not thread-safe."""

    def __init__(self, period: float = PERIOD, burst: int = BURST) -> None:
        super().__init__(period, allow_next_n=burst - 1, default_stream_id="file_line_no",
                         summary_msg="(… {numskip:,} more like this held back in the last minute)",
                         expire_offset_sec=int(2 * period),
                         expire_msg="(… {numskip:,} more from {stream_id} were held back earlier)")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        with self._lock:
            passed = bool(super().filter(record))
        if passed and record.msg is getattr(record, "srl_expire_note", None):
            record.args = ()  # a held-back record replaced by the note of others held back: no arguments left
        return passed


class ClientErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's request handler logs a request it could not parse (two Host headers, a bad request line,
    TLS sent to plain HTTP) with `logger.exception`: here that is one WARNING line naming the client and
    what was wrong. Any other exception keeps its traceback."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            reason = " ".join(str(error.message).split())[:200]
            said = (str(msg) % args if args else str(msg)).replace("Error handling request", "malformed request")
            self.warning("%s: refused with %s (%s)", said, error.code, reason)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


def setup_logging(verbose: int, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Journald-friendly logs on stderr under systemd (JOURNAL_STREAM set), timestamped otherwise."""
    level = [logging.INFO, logging.DEBUG][min(verbose, 1)]
    handler = logging.StreamHandler(sys.stderr)
    if environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RepeatLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "watchdog", "PIL", "httpx", "httpcore", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
