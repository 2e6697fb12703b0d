"""Descriptions, keywords and visible text from a local vision LLM served by Ollama (`[describe]`).

A stage of its own beside the pipeline: indexing never waits for it. One thread runs an asyncio loop
with the `ollama` client's `AsyncClient` and takes the catalog's indexed images that this describer
(model + prompt) has not described yet, one request at a time:

  decode pool: the image, oriented and shrunk to `max_side`, as JPEG (with its content hash)
  Ollama:      one `chat` call, the image attached, `format` = a JSON schema (description, keywords, text)
  decode pool: the sidecar — keywords as machine keywords, dc:description where empty or pixdex's,
               pixdex:Text
  writer:      `described`: the keywords join the machine tags (source "llm"), description and text
               the text index

When Ollama cannot be reached or the model is not pulled, nothing is blamed on an image: the images
wait as "description pending", `state` says why and what to run, and the describer looks again with
backoff. A timeout or an answer that is not the JSON asked for is tried again `retries` times; then
the image is recorded as not described, with the reason, and not tried again until it changes or
the describer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.errors import PixdexError, ReadError
from pixdex.indexer.paths import display_path
from pixdex.indexer.sections import DescribeSettings

log = logging.getLogger(__name__)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 12},
        "text": {"type": "string"},
    },
    "required": ["description", "keywords", "text"],
}
DEFAULT_HOST = "http://127.0.0.1:11434"
IDLE = 2.0  # seconds between looks for work when there is none
BACKOFF = (2.0, 5.0, 15.0, 30.0, 60.0)  # while Ollama is unreachable or the model missing


class Unreachable(PixdexError):
    """Ollama or the model is not there: no image's fault; images wait."""


class BadAnswer(PixdexError):
    """The model answered something that is not the JSON asked for."""


def prompt_of(settings: DescribeSettings) -> str:
    return settings.prompt.replace("{language}", settings.language)


def describer_id(settings: DescribeSettings) -> str:
    return f"{settings.model}@{hashlib.sha256(prompt_of(settings).encode()).hexdigest()[:12]}"


def host_of(settings: DescribeSettings, environ: dict[str, str] | Any = os.environ) -> str:
    return settings.host or environ.get("OLLAMA_HOST") or DEFAULT_HOST


def parse_answer(content: str) -> dict[str, Any]:
    """The model's JSON, checked against the schema's shape; BadAnswer otherwise."""
    try:
        answer = json.loads(content)
    except ValueError:
        raise BadAnswer(f"the model's answer is not JSON: {content[:80]!r}") from None
    if not isinstance(answer, dict):
        raise BadAnswer(f"the model's answer is not a JSON object: {content[:80]!r}")
    description, keywords, text = answer.get("description"), answer.get("keywords"), answer.get("text", "")
    if not isinstance(description, str) or not isinstance(keywords, list) or not isinstance(text, str):
        raise BadAnswer(f"the model's answer lacks description (text), keywords (list) or text: {content[:80]!r}")
    words = [" ".join(k.split()) for k in keywords if isinstance(k, str) and k.strip()]
    return {"description": " ".join(description.split()), "keywords": list(dict.fromkeys(words))[:12],
            "text": text.strip()}


class Describer:
    """The describe stage of an open core. `prepare(path)` and `write(...)` run in the decode pool;
    `record(...)` is the writer's `described` command; `paused()` the pipeline's pause."""

    def __init__(self, settings: DescribeSettings, catalog_path: Any, prepare: Callable[[bytes], Any],
                 write: Callable[..., Any], record: Callable[..., Any], paused: Callable[[], bool],
                 listener: Callable[[str, dict[str, Any]], None] | None = None,
                 environ: dict[str, str] | Any = os.environ) -> None:
        self.settings = settings
        self.id = describer_id(settings)
        self.host = host_of(settings, environ)
        self.catalog_path = catalog_path
        self.prepare, self.write, self.record, self.paused = prepare, write, record, paused
        self.listener = listener
        self.state = "starting"
        self.why = ""
        self.current = ""
        self.done = 0
        self.failed = 0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="pixdex-describe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop now: a request in progress is abandoned (that image is described at the next start)."""
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=15)

    def status(self) -> dict[str, Any]:
        return {"enabled": True, "model": self.settings.model, "host": self.host, "state": self.state,
                "why": self.why, "current": self.current, "described": self.done, "failed": self.failed}

    # The loop ---------------------------------------------------------------------------------
    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                asyncio.run(self._run())
            except asyncio.CancelledError:  # stop() cancelled it
                return
            except Exception:
                log.exception("the describer failed; starting it again in 30 s")
                self.state, self.why = "waiting", "the describer failed (see the log); starting again"
                self._stop.wait(30)

    async def _run(self) -> None:
        from ollama import AsyncClient  # late: ollama (httpx, pydantic) loads only with [describe] on

        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        client = AsyncClient(host=self.host, timeout=self.settings.timeout)
        waits = 0
        recent: dict[int, float] = {}  # images just recorded, until the writer has surely committed them
        while not self._stop.is_set():
            if self.paused():
                self.state = "paused"
                await self._sleep(IDLE)
                continue
            try:
                await self._check(client)
            except Unreachable as exc:
                self._waiting(str(exc))
                await self._sleep(BACKOFF[min(waits, len(BACKOFF) - 1)])
                waits += 1
                continue
            now = time.monotonic()
            recent = {i: t for i, t in recent.items() if now - t < 30}
            rows = await asyncio.to_thread(self._next, set(recent))
            if not rows:
                self.state, self.why, waits = "idle", "", 0
                await self._sleep(IDLE)
                continue
            row = rows[0]
            self.state, self.why, self.current = "describing", "", display_path(row.path)
            recent[row.id] = time.monotonic()
            try:
                await self._describe(client, row)
                waits = 0
            except Unreachable as exc:
                self._waiting(str(exc))
                await self._sleep(BACKOFF[min(waits, len(BACKOFF) - 1)])
                waits += 1
            except Exception as exc:  # noqa: BLE001 - one image's failure; the stage goes on
                self.failed += 1
                reason = str(exc) if isinstance(exc, PixdexError) else f"{type(exc).__name__}: {exc}"
                log.warning("%s: not described: %s", display_path(row.path), reason)
                await asyncio.to_thread(self._record_failure, row.id, reason)
                self._tell("describe", {"id": row.id, "path": display_path(row.path), "error": reason})
            finally:
                self.current = ""

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            await asyncio.sleep(min(0.2, end - time.monotonic()))

    def _waiting(self, why: str) -> None:
        if self.why != why:
            log.warning("descriptions wait: %s", why)
            self._tell("describe", {"waiting": why})
        self.state, self.why = "waiting", why

    def _next(self, skip: set[int]) -> list[Any]:
        catalog = Catalog(self.catalog_path, read_only=True)
        try:
            return catalog.describe_next(self.id, 1, skip)
        finally:
            catalog.close()

    async def _check(self, client: Any) -> None:
        """Ollama answers and has the model; Unreachable says what to do otherwise."""
        import httpx  # late: as in `_run`
        from ollama import ResponseError  # late: as in `_run`

        if self.state not in ("starting", "waiting"):
            return
        try:
            await client.show(self.settings.model)
        except ResponseError as exc:
            if exc.status_code == 404:
                raise Unreachable(f"the model {self.settings.model} is not in Ollama at {self.host}: run "
                                  f"`ollama pull {self.settings.model}` (or set [describe] model)") from None
            raise Unreachable(f"Ollama at {self.host} answered {exc.status_code}: {exc.error}") from None
        except (ConnectionError, httpx.HTTPError, OSError) as exc:
            raise Unreachable(f"Ollama is not reachable at {self.host} ({exc}); start it (`ollama serve`) "
                              "or set [describe] host / OLLAMA_HOST") from None
        except Exception as exc:  # noqa: BLE001 - an answer the client cannot read: not an image's fault
            raise Unreachable(f"Ollama at {self.host} gave an answer pixdex cannot read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); is it a recent Ollama?") from None

    async def _describe(self, client: Any, row: Any) -> None:
        import httpx  # late: as in `_run`
        from ollama import ResponseError  # late: as in `_run`

        loop = asyncio.get_running_loop()
        try:
            jpeg, digest = await asyncio.wrap_future(self.prepare(row.path), loop=loop)
        except ReadError as exc:
            raise PixdexError(exc.reason) from None
        prompt = prompt_of(self.settings)
        answer: dict[str, Any] | None = None
        last = ""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await self._sleep(2.0 ** attempt)
            try:
                response = await client.chat(
                    model=self.settings.model, format=SCHEMA, keep_alive=self.settings.keep_alive,
                    options={"temperature": 0},
                    messages=[{"role": "user", "content": prompt, "images": [jpeg]}])
                answer = parse_answer(response.message.content or "")
                break
            except BadAnswer as exc:
                last = str(exc)
            except httpx.TimeoutException:
                last = f"no answer within {self.settings.timeout:g} s ([describe] timeout)"
            except ResponseError as exc:
                if exc.status_code == 404:
                    self.state = "waiting"
                    raise Unreachable(f"the model {self.settings.model} is not in Ollama at {self.host}: run "
                                      f"`ollama pull {self.settings.model}`") from None
                last = f"Ollama answered {exc.status_code}: {exc.error}"
            except (ConnectionError, httpx.TransportError, OSError) as exc:
                self.state = "waiting"
                raise Unreachable(f"Ollama is not reachable at {self.host} ({exc}); start it (`ollama serve`)") \
                    from None
        if answer is None:
            raise PixdexError(f"{last} (after {self.settings.retries + 1} tries)")
        machine = [str(t["name"]) for t in row.machine_tags if t.get("source") != "llm"]
        machine += [k for k in answer["keywords"] if k.casefold() not in {m.casefold() for m in machine}]
        side = await asyncio.wrap_future(self.write(row.path, machine, row.rejected_list, answer["description"],
                                                    answer["text"]), loop=loop)
        await asyncio.to_thread(lambda: self.record(row.id, self.id, answer, None, side, digest).result())
        self.done += 1
        self._tell("describe", {"id": row.id, "path": display_path(row.path), "keywords": answer["keywords"]})

    def _record_failure(self, image_id: int, reason: str) -> None:
        self.record(image_id, self.id, {}, reason, None, None).result()

    def _tell(self, kind: str, data: dict[str, Any]) -> None:
        if self.listener is not None:
            try:
                self.listener(kind, data)
            except Exception:
                log.debug("describe event not delivered", exc_info=True)
