"""The first start: the configured models pixdex knows, pulled from the Hugging Face hub in the background.

Reduced mode goes on meanwhile; the scanner's next check after they land reopens the core. A failure
(offline, the hub unreachable) is retried after `RETRY` seconds, then twice as long each time up to `RETRY_MOST`;
it is a warning in the log the first time and when its reason changes (an info line otherwise), and the hub
client's own retry warnings stay out of the log. What it is doing is `state` (status's
`models_pull`) and `models` events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pixdex.daemon.events import Bus
from pixdex.indexer import hub
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

log = logging.getLogger(__name__)

RETRY = 600.0  # seconds after the first pull that failed
RETRY_MOST = 6 * 3600.0


def quiet_hub_client() -> None:
    """The hub client's retries are warnings ("Retrying in 1s [Retry 1/5]", five a try) and its HTTP client logs
    each request: the one line `ModelPull` logs says what became of the pull."""
    from huggingface_hub.utils import logging as hub_logging  # late: the hub client loads for a pull only

    hub_logging.get_logger().setLevel(logging.ERROR)  # after its import, which sets a level of its own
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)


class ModelPull:
    def __init__(self, config: Config, bus: Bus, landed: Callable[[], None]) -> None:
        self.config = config
        self.bus = bus
        self.landed = landed  # called once the models are there: the scanner looks at once
        self.state: dict[str, Any] = {}  # state, models, error, next try, progress
        self._thread: threading.Thread | None = None
        self._next = 0.0
        self._wait = RETRY  # before the next try, once one failed
        self._said = ""  # the last failure's reason, as warned

    def due(self) -> bool:
        return self.config.models.auto_pull and self._thread is None and time.monotonic() >= self._next

    def start(self) -> None:
        """Pull the configured models that are missing, if pixdex knows them."""
        wanted, unknown = self._wanted()
        self._next = time.monotonic() + self._wait
        if not wanted:
            if unknown:
                self.state = {"state": "not possible", "error": f"{', '.join(unknown)}: not a model pixdex can pull; "
                              f"put its files into {self.config.model_dir}"}
            return
        names = [m.name for m in wanted]
        self.state = {"state": "pulling", "models": names, "started": time.time()}
        self.bus.publish("models", state="pulling", models=names)
        log.info("pulling the configured models in the background: %s", ", ".join(names))
        self._thread = threading.Thread(target=self._run, args=(wanted, names), name="pixdex-pull", daemon=True)
        self._thread.start()

    def _wanted(self) -> tuple[list[hub.Known], list[str]]:
        wanted, unknown = [], []
        for kind, name in (("clip", self.config.models.clip), ("tagger", self.config.models.tagger)):
            if not name or hub.installed(self.config.model_dir, kind, name) == "yes":
                continue
            try:
                model = hub.known(name)
            except PixdexError:
                unknown.append(name)
                continue
            if model.kind == kind:
                wanted.append(model)
        return wanted, unknown

    def _run(self, wanted: list[hub.Known], names: list[str]) -> None:
        try:
            for model in wanted:
                quiet_hub_client()
                hub.pull(model, self.config.model_dir, progress=self._progress(model.name, names))
                log.info("pulled %s", model.name)
            self.state = {"state": "pulled", "models": names, "at": time.time()}
            self.bus.publish("models", state="pulled", models=names)
            self.landed()
        except Exception as exc:  # noqa: BLE001 - reported, retried later; reduced mode goes on
            wait, self._wait = self._wait, min(self._wait * 2, RETRY_MOST)
            self._next = time.monotonic() + wait
            self.state = {"state": "failed", "models": names, "error": str(exc), "retry_at": time.time() + wait}
            self.bus.publish("models", state="failed", models=names, error=str(exc))
            said = log.warning if str(exc) != self._said else log.info
            self._said = str(exc)
            said("could not pull the models (retrying in %.0f min): %s", wait / 60, exc)
        finally:
            self._thread = None

    def _progress(self, name: str, names: list[str]) -> Callable[[int, int, str], None]:
        """How far the download of `name` is, in `state` and as `models` events, at most one a second."""
        last = [0.0]

        def report(done: int, total: int, unit: str) -> None:
            progress = {"model": name, "done": done, "total": total, "unit": unit}
            self.state = {**self.state, "progress": progress}
            now = time.monotonic()
            if now - last[0] >= 1.0 or (total and done >= total):
                last[0] = now
                self.bus.publish("models", state="pulling", models=names, progress=progress)
        return report
