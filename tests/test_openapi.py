"""daemon/openapi.json: valid OpenAPI 3.x, in step with the routes `add_routes` registers, and served
verbatim by `GET /openapi.json`. No daemon process is needed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from pixdex.daemon import routes_status
from pixdex.daemon.app import ROUTES

DOCUMENT = Path(routes_status.__file__).with_name("openapi.json")
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(json.loads(DOCUMENT.read_text(encoding="utf-8")))


def registered() -> set[tuple[str, str]]:
    app = web.Application()
    for routes in ROUTES:
        routes.add_routes(app)
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one for every GET
            continue
        found.add((route.method.lower(), route.resource.canonical))
    return found


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in spec["paths"].items() for method in item if method in METHODS}


def test_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    assert str(spec["openapi"]).startswith("3.")
    try:
        from openapi_spec_validator import validate
    except ImportError:
        pytest.skip("openapi-spec-validator is not installed: only the JSON was checked")
    validate(spec)


def test_every_route_is_documented_and_nothing_else(spec: dict[str, Any]) -> None:
    served, described = registered(), documented(spec)
    assert served, "add_routes registered nothing"
    assert sorted(served - described) == [], "routes missing from daemon/openapi.json"
    assert sorted(described - served) == [], "documented in daemon/openapi.json but not registered"


def test_documented_limits_match_the_code(spec: dict[str, Any]) -> None:
    from pixdex.indexer.sections import SearchSettings, ServerSettings
    from pixdex.query.service import MAX_K

    params = {p["name"]: p["schema"] for p in spec["paths"]["/search"]["get"]["parameters"]}
    assert params["k"]["maximum"] == MAX_K
    assert params["k"]["default"] == SearchSettings().k
    assert params["q"]["maxLength"] == ServerSettings().max_query_chars


def test_served_document_is_the_file() -> None:
    from aiohttp import web

    app = web.Application()
    app[routes_status.OPENAPI_DOC] = routes_status.OPENAPI.read_bytes()  # what add_routes reads at start
    request = make_mocked_request("GET", "/openapi.json", app=app)
    response = asyncio.run(routes_status.openapi(request))
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.body == DOCUMENT.read_bytes()
