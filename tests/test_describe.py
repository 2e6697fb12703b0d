"""`[describe]`: the real daemon, a stand-in Ollama server (aiohttp, Ollama's HTTP API) and the real
`ollama` client. Descriptions reach the sidecar, the catalog and search; Ollama down or the model
missing leaves images "description pending" while indexing goes on; bad answers are retried, then
recorded; a person's description is never replaced."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import solid
from ollamaserver import Ollama
from served import Served, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_daemon_left() -> Iterator[None]:
    yield
    Served.stop_all()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def library(root: Path) -> Path:
    pics = root / "pics"
    pics.mkdir()
    for name, colour in (("r.png", (200, 30, 30)), ("g.png", (30, 200, 30)), ("b.png", (30, 30, 200))):
        solid(colour, (1600, 1200)).save(pics / name)
    return pics


def served(root: Path, model_dir: Path, pics: Path, host: str, extra: str = "", via_env: bool = False,
           timeout: float = 5) -> Served:
    """A daemon with [describe] on, told of Ollama by `[describe] host` or (`via_env`) by OLLAMA_HOST."""
    environ = dict(os.environ, OLLAMA_HOST=host) if via_env else None
    where = "" if via_env else f'host = "{host}"\n'
    return Served(root, model_dir, [pics], environ=environ,
                  extra=f"[describe]\nenabled = true\n{where}max_side = 512\ntimeout = {timeout}\n"
                        f"{extra or 'retries = 1'}\n")


def describe_status(daemon: Served) -> dict[str, object]:
    return dict(daemon.status()["describe"])


def test_descriptions_reach_the_sidecar_the_catalog_and_search(tmp_path: Path, model_dir: Path) -> None:
    ollama = Ollama().start()
    pics = library(tmp_path)
    (pics / "g.png.xmp").write_text(  # a person described this one already
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
        '<rdf:li xml:lang="x-default">Grandma\'s lawn</rdf:li></rdf:Alt></dc:description></rdf:Description>'
        '</rdf:RDF></x:xmpmeta>')
    daemon = served(tmp_path, model_dir, pics, ollama.url).start()
    wait_for(lambda: describe_status(daemon).get("described") == 3, timeout=90, what="three descriptions")
    wait_for(daemon.idle, what="the writes to settle")
    status = describe_status(daemon)
    assert status["pending"] == 0 and status["failed"] == 0 and status["model"] == "qwen2.5vl:3b"

    chat = ollama.chats[0]
    assert chat["format"]["required"] == ["description", "keywords", "text"] and chat["stream"] is False
    assert "Answer in English" in chat["messages"][0]["content"]
    red = (pics / "r.png.xmp").read_text()
    assert "A mostly red picture, 512×384 pixels." in red  # dc:description, sent at max_side
    assert "pixdex|red thing" in red and "RECEIPT #2003030" in red  # machine keyword, pixdex:Text
    green = (pics / "g.png.xmp").read_text()
    assert "Grandma's lawn" in green and "A mostly green picture" not in green  # a person's description stays
    assert "pixdex|green thing" in green

    hits = daemon.get("/search", q="2003030", k=5)["hits"]  # the text read in the image
    assert [Path(h["path"]).name for h in hits if h["text_rank"]] == ["r.png"]
    tagged = daemon.get("/search", q='tag:"blue thing"', k=5)["hits"]
    assert [Path(h["path"]).name for h in tagged] == ["b.png"]
    described = daemon.get("/search", q="mostly green picture", k=5)["hits"]  # in the catalog all the same
    assert Path(described[0]["path"]).name == "g.png"
    item = daemon.get(f"/items/{hits[0]['id']}")
    red = next(t for t in item["tags"] if t["name"] == "red thing")
    assert {"name": "red thing", "source": "llm"}.items() <= red.items()

    calls = len(ollama.chats)
    daemon.stop()
    daemon.start()  # described once: a restart asks nothing again
    wait_for(lambda: describe_status(daemon).get("state") == "idle", what="the describer to find nothing to do")
    assert len(ollama.chats) == calls
    solid((250, 250, 250), (300, 200)).save(pics / "r.png")  # the content changes: described again
    wait_for(lambda: len(ollama.chats) == calls + 1 and describe_status(daemon).get("pending") == 0,
             timeout=60, what="the changed image to be described again")
    daemon.stop()
    ollama.stop()


def test_images_wait_while_ollama_is_down_or_lacks_the_model(tmp_path: Path, model_dir: Path) -> None:
    port = free_port()
    pics = library(tmp_path)
    daemon = served(tmp_path, model_dir, pics, f"http://127.0.0.1:{port}", via_env=True).start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 3, what="indexing to go on without Ollama")
    wait_for(lambda: describe_status(daemon).get("state") == "waiting", what="the describer to wait")
    status = describe_status(daemon)
    assert status["pending"] == 3 and "Ollama is not reachable at http://127.0.0.1:" in str(status["why"])
    assert "ollama serve" in str(status["why"])
    assert "descriptions (qwen2.5vl:3b" in daemon_status_text(daemon)

    ollama = Ollama()
    ollama.models = {"llava:7b"}
    ollama.start(port)
    wait_for(lambda: "ollama pull qwen2.5vl:3b" in str(describe_status(daemon).get("why")), timeout=90,
             what="the missing model to be named")
    assert describe_status(daemon)["pending"] == 3
    ollama.models.add("qwen2.5vl:3b")
    wait_for(lambda: describe_status(daemon).get("described") == 3, timeout=120, what="the descriptions")
    daemon.stop()
    ollama.stop()


def test_bad_answers_are_retried_then_recorded(tmp_path: Path, model_dir: Path) -> None:
    ollama = Ollama().start()
    ollama.fail500 = 1  # a crashed runner, then an answer in prose, not JSON: the third try gets JSON
    ollama.malformed = 1
    pics = library(tmp_path)
    daemon = served(tmp_path, model_dir, pics, ollama.url, extra="retries = 2", timeout=2)
    daemon.start()
    wait_for(lambda: describe_status(daemon).get("described") == 3, timeout=90, what="three descriptions")
    assert len(ollama.chats) == 5
    daemon.stop()

    ollama.slow = 3.0  # past [describe] timeout = 2 s, every try
    solid((240, 240, 10), (64, 64)).save(pics / "slow.png")
    daemon.start()
    wait_for(lambda: describe_status(daemon).get("failed") == 1, timeout=90, what="the slow answer to fail")
    ollama.slow = 0.0
    daemon.stop()

    ollama.malformed = 100
    (pics / "r.png").unlink()
    solid((10, 10, 240), (64, 64)).save(pics / "new.png")
    daemon.start()
    wait_for(lambda: describe_status(daemon).get("failed") == 2, timeout=90, what="the failure to be recorded")
    db = sqlite3.connect(daemon.data / "catalog.sqlite3")
    errors = {os.fsdecode(p): e for p, e in
              db.execute("SELECT path, describe_error FROM images WHERE describe_error IS NOT NULL")}
    db.close()
    assert "no answer within 2 s ([describe] timeout) (after 3 tries)" in errors[str(pics / "slow.png")]
    assert "the model's answer is not JSON" in errors[str(pics / "new.png")]
    assert daemon.listed().keys() >= {str(pics / "new.png")}  # searchable all the same
    daemon.stop()
    ollama.stop()


def daemon_status_text(daemon: Served) -> str:
    import subprocess

    from conftest import PIXDEX

    return subprocess.run([str(PIXDEX), "--config", str(daemon.config), "status"], env=daemon.environ,
                          capture_output=True, text=True, timeout=60).stdout


def test_a_stop_does_not_wait_for_a_slow_answer(tmp_path: Path, model_dir: Path) -> None:
    import time

    ollama = Ollama().start()
    ollama.slow = 120.0  # an answer that would take two minutes
    pics = library(tmp_path)
    daemon = served(tmp_path, model_dir, pics, ollama.url, timeout=300).start()
    wait_for(lambda: describe_status(daemon).get("state") == "describing" and ollama.chats, timeout=60,
             what="a request in progress")
    start = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - start < 12  # abandoned (cancelled), not awaited: described at the next start
    ollama.stop()


def test_reindex_of_a_described_image_keeps_its_llm_keywords_in_the_sidecar(tmp_path: Path, model_dir: Path) -> None:
    """`pixdex reindex FILE` runs the models again on the same content: the description stands, so the vision
    LLM's keywords stay machine keywords in the sidecar, and `pixdex check` finds nothing amiss."""
    import subprocess

    from conftest import PIXDEX

    ollama = Ollama().start()
    pics = library(tmp_path)
    daemon = served(tmp_path, model_dir, pics, ollama.url).start()
    try:
        wait_for(lambda: describe_status(daemon).get("described") == 3, timeout=90, what="three descriptions")
        wait_for(daemon.idle, what="the writes to settle")
        assert "pixdex|red thing" in (pics / "r.png.xmp").read_text()
        calls = len(ollama.chats)
        daemon.post("/reindex", {"paths": [str(pics / "r.png")]})
        wait_for(lambda: daemon.status()["progress"]["committed"] >= 4 and daemon.idle(), timeout=60,
                 what="the reindex")
        assert "pixdex|red thing" in (pics / "r.png.xmp").read_text()
        assert len(ollama.chats) == calls  # the same content is not described again
    finally:
        daemon.stop()
        ollama.stop()
    check = subprocess.run([str(PIXDEX), "--config", str(daemon.config), "check"], env=daemon.environ,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
