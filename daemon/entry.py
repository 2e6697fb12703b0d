"""The `pixdex` program's entry point. The commands' modules take a moment to import on a busy machine: a
Ctrl-C in that moment ends quietly with status 130, as it does once a command runs (not with a traceback)."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from pixdex.daemon.cli import main as run  # late on purpose: this import is what a Ctrl-C may interrupt
    except KeyboardInterrupt:
        print("pixdex: interrupted", file=sys.stderr)
        return 130
    return run()
