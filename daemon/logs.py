"""Logging for `pixdex serve` and its indexing process: journald's `<N>` prefixes under systemd, and a log
that cannot flood.

A message logged again and again from one place (one line of code: one cause) passes `BURST` times a
minute, then is held back and counted; the next one that passes says how many were held back (log-rate-
limit's `StreamRateLimitFilter`, on the handler, so every logger's records go through it). Debug records
are not limited: `pixdex serve -v` shows everything it was asked for. A client's malformed request is
one WARNING line without a traceback (`ClientErrors`, the logger aiohttp's request handler is given):
it is the client's mistake, not the daemon's.

No record is longer than a few KB, whatever logged it: a message is cut at `MESSAGE_CHARS`, a traceback
keeps its first and last `TRACE_CHARS` in all, each cut saying how much (`Bounded`). Python warnings and a
thread's uncaught exception are records too, so both bounds apply: found by a trial, watchdog warned once
per unreadable folder with the map of every watched folder in the text (a 2 GB log, one line of 11.8
million characters, watching "/"). A warning is held back per place that warns, whatever its text.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from typing import Any, TextIO

from aiohttp.http_exceptions import HttpProcessingError
from log_rate_limit import StreamRateLimitFilter

SYSLOG_LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
PERIOD = 60.0  # seconds
BURST = 10  # records one line of code may log per period before the rest are counted instead
MESSAGE_CHARS = 4096  # a record's line (prefix and message) is cut beyond this
TRACE_CHARS = 8192  # a traceback or stack beyond this keeps its first quarter and its end


def cut(text: str, limit: int, keep_end: bool = False) -> str:
    """`text` in at most about `limit` characters, saying how many were cut; `keep_end` keeps the first quarter
    and the end (where a traceback names the error) instead of the beginning."""
    if len(text) <= limit:
        return text
    marker = f" … ({len(text) - limit:,} chars cut) "
    if not keep_end:
        return text[:limit] + marker
    head = limit // 4
    return text[:head] + marker + text[len(text) - (limit - head):]


class Bounded(logging.Formatter):
    """Every record within `MESSAGE_CHARS` + `TRACE_CHARS` (and a stack's), from any logger."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return cut(super().formatMessage(record), MESSAGE_CHARS)

    def formatException(self, ei: Any) -> str:
        return cut(super().formatException(ei), TRACE_CHARS, keep_end=True)

    def formatStack(self, stack_info: str) -> str:
        return cut(super().formatStack(stack_info), TRACE_CHARS, keep_end=True)


class JournalFormatter(Bounded):
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


def log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                file: TextIO | None = None, line: str | None = None) -> None:
    """`warnings.showwarning` for the daemon: a WARNING record of `py.warnings` (as `logging.captureWarnings`
    makes), rate-limited per place that warns: a warning whose text changes every time (a path, a count)
    would pass a limit keyed by its text."""
    if file is not None:  # asked to write it somewhere in particular: as Python would
        file.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    logging.getLogger("py.warnings").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message,
                                             extra={"stream_id": f"{filename}:{lineno}"})


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught exception goes to the log as a record (bounded), not straight to stderr."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger(__name__).error("thread %s stopped on an uncaught exception: %s", name, args.exc_type.__name__,
                                      exc_info=args.exc_value or False)


def daemon_handler(stream: TextIO, journal: bool) -> logging.Handler:
    """The daemon's one handler: bounded records, repeats held back; journald's prefixes or timestamps."""
    handler = logging.StreamHandler(stream)
    if journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(Bounded("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RepeatLimit())
    return handler


def setup_logging(verbose: int, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Journald-friendly logs on stderr under systemd (JOURNAL_STREAM set), timestamped otherwise; warnings and
    threads' uncaught exceptions logged through it."""
    level = [logging.INFO, logging.DEBUG][min(verbose, 1)]
    root = logging.getLogger()
    root.handlers[:] = [daemon_handler(sys.stderr, bool(environ.get("JOURNAL_STREAM")))]
    root.setLevel(level)
    warnings.showwarning = log_warning
    threading.excepthook = _log_thread_exception
    for noisy in ("aiohttp.access", "watchdog", "PIL", "httpx", "httpcore", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
