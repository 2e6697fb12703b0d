"""The typed interface between the serving and the indexing process (`daemon/core_api.py`): every call in
`CALLS` is answered by `IndexingCore` and offered by `CoreProcess`'s proxy with the Protocol's very signature,
so a method renamed or retyped on one side fails here (and in mypy) instead of at the first request."""

from __future__ import annotations

import inspect

import pytest

from pixdex.daemon.core_api import CALLS, Core
from pixdex.daemon.core_process import CoreProcess
from pixdex.daemon.indexing_core import IndexingCore


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("side", [IndexingCore, CoreProcess])
def test_each_call_has_the_protocols_signature_on_both_sides(name: str, side: type) -> None:
    wanted = inspect.signature(getattr(Core, name))
    implemented = vars(side).get(name)  # its own, not the Protocol's empty body inherited
    assert implemented is not None, f"{side.__name__} lacks {name}"
    assert inspect.signature(implemented) == wanted, f"{side.__name__}.{name}"


def test_the_table_names_every_method_of_the_protocol() -> None:
    methods = {name for name, _ in inspect.getmembers(Core, inspect.isfunction) if not name.startswith("_")}
    assert set(CALLS) == methods
