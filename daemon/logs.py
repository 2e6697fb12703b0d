"""Logging for `pixdex serve` and its indexing process: journald's `<N>` prefixes under systemd."""

from __future__ import annotations

import logging
import os
import sys

SYSLOG_LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """`<N>` syslog priority prefixes, which journald reads from a service's stderr; no timestamps."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\n    ")
        return f"<{SYSLOG_LEVELS.get(record.levelno, 6)}>{text}"


def setup_logging(verbose: int, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Journald-friendly logs on stderr under systemd (JOURNAL_STREAM set), timestamped otherwise."""
    level = [logging.INFO, logging.DEBUG][min(verbose, 1)]
    handler = logging.StreamHandler(sys.stderr)
    if environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "watchdog", "PIL", "httpx", "httpcore", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
