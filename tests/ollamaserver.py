"""A local stand-in for Ollama's HTTP API (aiohttp), for `OLLAMA_HOST` / `[describe] host`.

Routes as Ollama answers them: `GET /api/tags`, `POST /api/show` (404 for a model not pulled),
`POST /api/chat` (non-streaming; with `format`, `message.content` is a JSON string). The answer for an
image is derived from its pixels (its mean colour names a keyword and the text "receipt #<n>"), so each
image gets its own description. Modes: `models` (which are pulled), `malformed` (answers that are not
JSON, that many times), `slow` (seconds before answering), `fail500` (that many 500s), `down` (refuse
with 503 everything, as a proxy in front of a dead server would). It records each chat's request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import threading
from typing import Any

from aiohttp import web
from PIL import Image, ImageStat


class Ollama:
    def __init__(self) -> None:
        self.models = {"qwen2.5vl:3b"}
        self.malformed = 0
        self.fail500 = 0
        self.slow = 0.0
        self.chats: list[dict[str, Any]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> Ollama:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start(port))
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True, name="ollama").start()
        ready.wait(10)
        return self

    async def _start(self, port: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/show", self.show)
        app.router.add_post("/api/chat", self.chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        """Stop serving; a slow answer still being held back is dropped."""
        import concurrent.futures

        if self._loop is not None and self._runner is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": m, "model": m, "size": 1} for m in sorted(self.models)]})

    async def show(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("model") or body.get("name")
        if name not in self.models:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        return web.json_response({"modelfile": "", "parameters": "", "template": "", "details": {"family": "qwen25vl"},
                                  "model_info": {"general.architecture": "qwen25vl"},
                                  "modified_at": "2026-11-01T00:00:00Z", "capabilities": ["completion", "vision"]})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.chats.append(body)
        if body.get("model") not in self.models:
            return web.json_response({"error": f"model '{body.get('model')}' not found, try pulling it first"},
                                     status=404)
        if self.slow:
            await asyncio.sleep(self.slow)
        if self.fail500:
            self.fail500 -= 1
            return web.json_response({"error": "llama runner process has terminated"}, status=500)
        image = body["messages"][-1]["images"][0]
        pixels = Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")
        red, green, blue = (int(m) for m in ImageStat.Stat(pixels).mean)
        colour = max((red, "red"), (green, "green"), (blue, "blue"))[1]
        answer = {"description": f"A mostly {colour} picture, {pixels.width}×{pixels.height} pixels.",
                  "keywords": [f"{colour} thing", "stand-in", "picture"],
                  "text": f"RECEIPT #{red}{green}{blue}"}
        content = json.dumps(answer)
        if self.malformed:
            self.malformed -= 1
            content = "Sure! Here is the description: a picture"
        return web.json_response({"model": body["model"], "created_at": "2026-11-22T00:00:00Z",
                                  "message": {"role": "assistant", "content": content}, "done": True,
                                  "done_reason": "stop"})
