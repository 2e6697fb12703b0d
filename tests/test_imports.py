"""usearch 2.26.2–2.26.6 segfault when imported before onnxruntime; worker processes and lazy imports
make the order easy to get wrong, so both orders are imported here in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("order", [("usearch.index", "onnxruntime"), ("onnxruntime", "usearch.index")])
def test_usearch_and_onnxruntime_import_in_either_order(order: tuple[str, str]) -> None:
    code = f"import {order[0]}; import {order[1]}; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", \
        f"import {order[0]} then {order[1]} exited {proc.returncode}: pin a usearch without the crash"


def test_the_query_path_imports_usearch_first_and_survives() -> None:
    """The search service imports usearch (reader) before its text tower imports onnxruntime."""
    code = ("import pixdex.query.service, pixdex.indexer.session, onnxruntime as ort; "
            "print(ort.get_available_providers()[-1])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "CPUExecutionProvider" in proc.stdout
