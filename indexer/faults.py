"""Fault injection for the crash and race tests. Unset in normal use: every function here returns at once.

- `PIXDEX_TEST_CRASH_ON=TEXT`: a decode worker that opens a file whose name contains TEXT dies by
  SIGSEGV, as a decoder bug would make it.
- `PIXDEX_TEST_CRASH_MODEL_ON=TEXT`: a model process (the Ray job's model actor) given a batch with a file whose
  name contains TEXT dies by SIGSEGV, as a crash in the model runtime or the kernel's OOM killer would end it
  (with `PIXDEX_TEST_HOLD_DIR`, after a line in `DIR/model-crashes`).
- `PIXDEX_TEST_HOLD=STAGE:TEXT[,STAGE:TEXT…]` and `PIXDEX_TEST_HOLD_DIR=DIR`: indexing stops at STAGE
  (`decode`, `infer`, `sidecar`, `commit`; `register`: the scanner between reading the catalog and
  registering what it found; `drop`: between a deletion's commit and the removal of its sidecars) for a file
  whose name contains TEXT, says so by creating `DIR/held-STAGE` (holding the process id),
  and goes on once `DIR/release-STAGE` exists (or after a minute). A test moves or changes the file in
  between, at exactly that moment of the file's way through.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

CRASH_ENV = "PIXDEX_TEST_CRASH_ON"
CRASH_MODEL_ENV = "PIXDEX_TEST_CRASH_MODEL_ON"
HOLD_ENV = "PIXDEX_TEST_HOLD"
HOLD_DIR_ENV = "PIXDEX_TEST_HOLD_DIR"
HOLD_LIMIT = 60.0


def crash_on(path: bytes) -> None:
    text = os.environ.get(CRASH_ENV)
    if text and text.encode() in os.path.basename(path):
        os.kill(os.getpid(), signal.SIGSEGV)


def crash_model_on(paths: Iterable[bytes]) -> None:
    text = os.environ.get(CRASH_MODEL_ENV)
    if text and any(text.encode() in os.path.basename(p) for p in paths):
        folder = os.environ.get(HOLD_DIR_ENV)
        if folder:  # a line per death, for the test to count
            with open(os.path.join(folder, "model-crashes"), "a") as counted:
                counted.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGSEGV)


def hold(stage: str, paths: Iterable[bytes]) -> None:
    """Wait at `stage` when one of `paths` is the one the test named (see the module's docstring)."""
    wanted = os.environ.get(HOLD_ENV)
    folder = os.environ.get(HOLD_DIR_ENV)
    if not wanted or not folder:
        return
    texts = [text for at, _, text in (w.partition(":") for w in wanted.split(",")) if at == stage]
    if not any(text.encode() in os.path.basename(p) for text in texts for p in paths):
        return
    held, release = os.path.join(folder, f"held-{stage}"), os.path.join(folder, f"release-{stage}")
    if os.path.exists(release):
        return  # held once already: the test let it go
    with open(held, "w") as marker:
        marker.write(str(os.getpid()))  # the process that holds: a test may kill it there
    deadline = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
