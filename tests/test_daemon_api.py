"""The daemon's HTTP API on the real socket and loopback TCP: answers, refusals, tokens, events,
thumbnails and files, pause/resume and the CLI going through it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PIXDEX, gradient, make_library, noise
from served import Served, quote, sse_events, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("api")
    pics, other = root / "pics", root / "other"
    make_library(pics)
    other.mkdir()
    noise(50).save(other / "elsewhere_boat.jpg")
    (root / "secret").mkdir()
    noise(51).save(root / "secret" / "private.jpg")
    daemon = Served(root, model_dir, [pics, other]).start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 9, timeout=60, what="the library")
    yield daemon
    daemon.stop()


def test_search_status_items_over_the_socket(served: Served) -> None:
    results = served.get("/search", q="beach sunset camera:canon", k=5)
    names = [Path(h["path"]).name for h in results["hits"]]
    assert names[:2] and set(names) <= {"beach_sunset_01.jpg", "beach_sunset_02.jpg"}
    status = served.status()
    assert status["counts"]["done"] == 10 and status["daemon"]["mode"] == "full"
    assert [r["mode"] for r in status["watch"]] == ["inotify", "inotify"]
    hit = results["hits"][0]
    item = served.get(f"/items/{hit['id']}")
    assert item["path"] == hit["path"] and item["camera"] and item["clip_model"]
    similar = served.get("/similar", id=hit["id"], k=3)
    assert hit["id"] not in [h["id"] for h in similar["hits"]] and len(similar["hits"]) == 3
    assert served.get("/health")["ok"] is True


def test_in_collection_filter_restricts_both_sides(served: Served) -> None:
    everything = served.get("/search", q="boat", k=50)["hits"]
    assert any("elsewhere_boat" in h["path"] for h in everything)
    inside = served.get("/search", q="boat in:other", k=50)["hits"]
    assert inside and all(h["path"].startswith(str(served.folders[1]) + "/") for h in inside)
    outside = served.get("/search", q="boat -in:other", k=50)["hits"]
    assert outside and not any(h["path"].startswith(str(served.folders[1]) + "/") for h in outside)
    status, body = served.raw("GET", "/search?q=boat+in:nowhere", {"Host": "localhost"})
    assert status == 400 and "no such collection" in body["error"]  # type: ignore[index]


def test_refused_requests_get_4xx_and_the_daemon_keeps_serving(served: Served) -> None:
    local = {"Host": "localhost"}
    assert served.raw("GET", "/health", {"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert served.raw("GET", "/health", {})[0] in (400, 403)
    assert served.raw("POST", "/pause", {**local, "Origin": "http://evil.example"})[0] == 403
    assert served.raw("GET", "/health", {"Host": "127.0.0.1"}, tcp=True)[0] == 401  # no token
    assert served.raw("GET", "/health", {"Host": "127.0.0.1", "Authorization": "Bearer wrong"}, tcp=True)[0] == 401
    status, body = served.raw("GET", "/health", {"Host": "127.0.0.1",
                                                 "Authorization": f"Bearer {served.token()}"}, tcp=True)
    assert status == 200 and body["ok"]  # type: ignore[index]
    assert served.raw("GET", "/thumbnail/../../etc/passwd", local)[0] in (400, 404)
    assert served.raw("GET", "/thumbnail/%2e%2e%2f%2e%2e%2fetc%2fpasswd", local)[0] in (400, 404)
    for bad_k in ("-1", "1000000000", "ten"):
        status, body = served.raw("GET", f"/search?q=x&k={bad_k}", local)
        assert status == 400 and body["parameter"] == "k"  # type: ignore[index]
    status, body = served.raw("GET", "/search?q=" + "a" * 10_000_000, local)
    assert status in (400, 414, 431)
    status, body = served.raw("GET", "/items/%C2%B2", local)
    assert status == 400 and body["parameter"] == "id"  # type: ignore[index]
    assert served.raw("GET", "/items/123", local)[0] == 404
    big = b"x" * (200 * 1024 * 1024)
    status, _ = served.raw("POST", "/search", {**local, "Content-Type": "multipart/form-data; boundary=b"}, big)
    assert status == 413
    assert served.get("/health")["ok"]


def test_no_endpoint_serves_a_file_outside_the_roots(served: Served, tmp_path: Path) -> None:
    pics = served.folders[0]
    secret = served.root / "secret" / "private.jpg"
    # A watched image replaced by a symlink to a file outside: the item exists, its file is refused.
    victim = pics / "garden" / "red_flower.png"
    item = served.listed()[str(victim)]
    assert served.raw("GET", f"/file/{item}", {"Host": "localhost"})[0] == 200
    backup = tmp_path / "red_flower.png"
    shutil.copy(victim, backup)
    served.post("/pause")
    try:
        victim.unlink()
        victim.symlink_to(secret)
        for route in ("file", "thumbnail"):
            status, body = served.raw("GET", f"/{route}/{item}", {"Host": "localhost"})
            assert status == 404, (route, body)
        # A folder on the way replaced by a link to a folder outside holding a file of the same name.
        victim.unlink()
        shutil.copy(backup, victim)
        outside = served.root / "secret-garden"
        outside.mkdir()
        shutil.copy(secret, outside / victim.name)
        os.rename(victim.parent, served.root / "garden-away")
        victim.parent.symlink_to(outside)
        for route in ("file", "thumbnail"):
            status, body = served.raw("GET", f"/{route}/{item}", {"Host": "localhost"})
            assert status == 404, (route, body)
        victim.parent.unlink()
        os.rename(served.root / "garden-away", victim.parent)
    finally:
        if victim.is_symlink():
            victim.unlink()
            shutil.copy(backup, victim)
        served.post("/resume")


def test_thumbnails_and_originals(served: Served) -> None:
    from io import BytesIO

    from PIL import Image

    item = served.listed()[str(served.folders[0] / "holiday" / "beach_sunset_01.jpg")]
    status, data = served.raw("GET", f"/thumbnail/{item}?size=64", {"Host": "localhost"})
    assert status == 200
    thumb = Image.open(BytesIO(data))  # type: ignore[arg-type]
    assert max(thumb.size) <= 128
    assert list((served.root / "cache" / "pixdex" / "thumbnails").rglob("*.jpg"))
    status, data = served.raw("GET", f"/file/{item}", {"Host": "localhost"})
    assert status == 200 and data == (served.folders[0] / "holiday" / "beach_sunset_01.jpg").read_bytes()
    assert served.raw("GET", f"/thumbnail/{item}?size=5000", {"Host": "localhost"})[0] == 400


def test_a_limited_token_sees_only_its_collection(served: Served) -> None:
    made = subprocess.run([str(PIXDEX), "--config", str(served.config), "token", "--new", "--only", "other"],
                          env=served.environ, capture_output=True, text=True, check=True)
    token = made.stdout.strip()
    headers = {"Host": "127.0.0.1", "Authorization": f"Bearer {token}"}
    status, body = served.raw("GET", "/search?q=boat&k=50", headers, tcp=True)
    assert status == 200 and body["hits"]  # type: ignore[index]
    assert all(h["path"].startswith(str(served.folders[1]) + "/") for h in body["hits"])  # type: ignore[index]
    inside = served.listed()[str(served.folders[0] / "holiday" / "beach_sunset_01.jpg")]
    assert served.raw("GET", f"/items/{inside}", headers, tcp=True)[0] == 404
    assert served.raw("GET", f"/file/{inside}", headers, tcp=True)[0] == 404
    assert served.raw("GET", "/status", headers, tcp=True)[0] == 403
    assert served.raw("POST", "/pause", headers, tcp=True)[0] == 403


def test_curl_over_the_unix_socket(served: Served) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run([curl, "-s", "--unix-socket", str(served.socket_path), "http://localhost/search?q=flower&k=2"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["hits"]
    code = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", "--unix-socket",
                           str(served.socket_path), "http://localhost/thumbnail/../../etc/passwd"],
                          capture_output=True, text=True).stdout
    assert code in ("400", "404")


def test_pause_resume_and_server_sent_events(served: Served) -> None:
    import aiohttp

    async def run() -> list[tuple[str, dict[str, object]]]:
        seen: list[tuple[str, dict[str, object]]] = []
        connector = aiohttp.UnixConnector(path=str(served.socket_path))
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.get("http://localhost/events", timeout=aiohttp.ClientTimeout(total=60)) as response:
            assert response.status == 200
            await asyncio.get_running_loop().run_in_executor(None, served.post, "/pause")
            noise(77).save(served.folders[0] / "during_pause.jpg")
            await asyncio.sleep(2.0)
            status = await asyncio.get_running_loop().run_in_executor(None, served.status)
            assert status["daemon"]["paused"] and sum(status["queue"].values()) >= 1
            await asyncio.get_running_loop().run_in_executor(None, served.post, "/resume")
            async for kind, data in sse_events(response):
                seen.append((kind, data))
                if kind == "indexed" and "during_pause" in str(data.get("path")):
                    return seen
        return seen

    seen = asyncio.run(run())
    kinds = [k for k, _ in seen]
    assert "paused" in kinds and "resumed" in kinds and "queued" in kinds and "indexed" in kinds
    done = next(n for n, (k, d) in enumerate(seen) if k == "indexed" and "during_pause" in str(d.get("path")))
    assert kinds.index("paused") < kinds.index("resumed") < done


def test_cli_through_the_daemon_prints_what_it_prints_without_one(served: Served, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PIXDEX), "--config", str(served.config), *args], env=served.environ,
                              capture_output=True, text=True)

    through = [cli("search", "red flower", "-k", "5"), cli("search", "--json", "tag:*", "-k", "3"),
               cli("failures"), cli("similar", str(served.folders[0] / "garden" / "red_flower.png"), "-k", "3")]
    assert through[0].returncode == 0 and through[0].stdout
    # Same catalog without a daemon: a copy of the data directory, read directly.
    copy = tmp_path / "copy"
    shutil.copytree(served.data, copy / "data" / "pixdex")
    environ = {**served.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run-none"), "XDG_DATA_HOME": str(copy / "data")}
    direct = [subprocess.run([str(PIXDEX), "--config", str(served.config), *args], env=environ,
                             capture_output=True, text=True)
              for args in (("search", "red flower", "-k", "5"), ("search", "--json", "tag:*", "-k", "3"),
                           ("failures",), ("similar", str(served.folders[0] / "garden" / "red_flower.png"),
                                           "-k", "3"))]
    for a, b in zip(through, direct, strict=True):
        assert (a.returncode, a.stdout) == (b.returncode, b.stdout)


def test_arguments_that_are_not_utf8_are_searched_the_same_through_the_daemon_and_without(
        served: Served, tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(served.folders[1]), b"caf\xe9_latin1.jpg")
    with open(raw, "wb") as handle:
        noise(52).save(handle, format="JPEG")
    wait_for(lambda: served.idle() and any("latin1" in p for p in served.listed(served.folders[1])),
             what="the latin-1 name")
    asked: list[list[bytes]] = [[b"search", b"caf\xe9", b"-k", b"3"], [b"search", b"--json", b"caf\xe9 latin1"],
                                [b"similar", raw, b"-k", b"2", b"-0"], [b"open", b"--print-url", b"caf\xe9"]]

    def cli(environ: dict[str, str], args: list[bytes]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([os.fsencode(PIXDEX), b"--config", os.fsencode(served.config), *args], env=environ,
                              capture_output=True, timeout=60)

    through = [cli(served.environ, args) for args in asked]
    for proc in through:
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert json.loads(through[1].stdout)["hits"][0]["path"].endswith("caf\\xe9_latin1.jpg")
    found = through[2].stdout.split(b"\0")[:-1]
    assert len(found) == 2 and raw not in found  # found by its exact bytes: an indexed image, itself left out
    copy = tmp_path / "copy"
    shutil.copytree(served.data, copy / "data" / "pixdex")
    environ = {**served.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run-none"), "XDG_DATA_HOME": str(copy / "data")}
    for args, a in zip(asked[:3], through, strict=False):
        b = cli(environ, args)
        assert (a.returncode, a.stdout) == (b.returncode, b.stdout), (args, b.stderr)
    os.unlink(raw)
    wait_for(lambda: served.idle() and not any("latin1" in p for p in served.listed(served.folders[1])),
             what="the latin-1 name to leave")


def test_cli_search_through_the_daemon_stays_light(served: Served) -> None:
    probe = ("import sys, runpy; sys.argv = ['pixdex', '--config', sys.argv[1], 'search', 'flower', '-k', '1']\n"
             "from pixdex.daemon import cli\n"
             "code = cli.main()\n"
             "heavy = [m for m in ('numpy', 'onnxruntime', 'torch', 'tantivy', 'usearch', 'PIL', 'aiohttp') "
             "if m in sys.modules]\n"
             "print('HEAVY', heavy, code)")
    out = subprocess.run([sys.executable, "-c", probe, str(served.config)], env=served.environ, capture_output=True,
                         text=True, check=True).stdout
    assert "HEAVY [] 0" in out, out


def test_reindex_and_watch_add_remove_through_the_cli(served: Served, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PIXDEX), "--config", str(served.config), *args], env=served.environ,
                              capture_output=True, text=True)

    extra = tmp_path / "extra"
    extra.mkdir()
    gradient(60).save(extra / "added_later.png")
    out = cli("watch", "add", str(extra), "--name", "trip")
    assert out.returncode == 0 and "in:trip" in out.stdout, out.stderr
    wait_for(lambda: served.get("/search", q="in:trip", k=10)["hits"], what="the added collection")
    assert "trip" in cli("watch", "list").stdout
    out = cli("watch", "remove", "pics")
    assert out.returncode == 2 and "library.folders" in out.stderr  # the config file's, not ours to remove
    assert cli("reindex", str(extra)).stdout.startswith("1 image(s) queued")
    os.mkfifo(extra / "fifo.jpg")  # in a watched folder, but no image: said, not "0 image(s) queued" and success
    out = cli("reindex", str(extra / "fifo.jpg"))
    assert out.returncode == 2 and out.stderr.strip().endswith("fifo.jpg: no indexed image there (pixdex indexes "
                                                               "regular image files; `pixdex failures` lists those it "
                                                               "could not read)"), out
    out = cli("watch", "remove", "trip")
    assert out.returncode == 0, out.stderr
    assert not served.get("/search", q="added later", k=10)["hits"] or all(
        "added_later" not in h["path"] for h in served.get("/search", q="added later", k=10)["hits"])
    status = cli("status")
    assert "daemon: running" in status.stdout and "inotify" in status.stdout


def test_a_folder_added_around_a_collection_keeps_it_and_removing_it_keeps_what_that_holds(
        served: Served, tmp_path: Path) -> None:
    """A trial added a parent folder of a collection, then removed it: the inner collection had been merged into
    it (its `in:` name and tokens gone), and the removal took its images out of the index."""
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PIXDEX), "--config", str(served.config), *args], env=served.environ,
                              capture_output=True, text=True)

    outer = tmp_path / "nest"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    gradient(61).save(inner / "kept_inside.png")
    noise(62).save(outer / "outside_only.png")
    assert cli("watch", "add", str(inner), "--name", "innercol").returncode == 0
    wait_for(lambda: served.get("/search", q="in:innercol", k=10)["hits"], what="the inner collection")
    kept = served.get("/search", q="in:innercol", k=10)["hits"][0]["id"]
    out = cli("watch", "add", str(outer), "--name", "outercol")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: len(served.get("/search", q="in:outercol", k=10)["hits"]) == 2, what="the outer collection")
    names = [w["name"] for w in json.loads(cli("watch", "list", "--json").stdout)]
    assert {"innercol", "outercol"} <= set(names), names
    assert f"{inner} (added as innercol)" in cli("status").stdout  # status's folders: line names them too
    assert [h["id"] for h in served.get("/search", q="in:innercol", k=10)["hits"]] == [kept]
    out = cli("watch", "remove", "outercol")
    assert out.returncode == 0, out.stderr
    hits = served.get("/search", q="in:innercol", k=10)["hits"]
    assert [h["id"] for h in hits] == [kept], hits  # the same image, the same id, still found
    assert [Path(p).name for p in served.listed(outer)] == ["kept_inside.png"]
    for system in ("/", "/proc", "/sys/kernel"):
        out = cli("watch", "add", system)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out
        assert "not a photo folder" in out.stderr, out.stderr


def test_metrics_and_openapi(served: Served) -> None:
    status, text = served.raw("GET", "/metrics", {"Host": "localhost"})
    assert status == 200
    body = text.decode()  # type: ignore[union-attr]
    assert 'pixdex_queue{priority="asked"}' in body and "pixdex_http_requests_total" in body
    assert "pixdex_process_rss_bytes" in body
    assert 'pixdex_process_pss_bytes{process="serving process"}' in body
    assert 'pixdex_process_pss_bytes{process="indexing process"}' in body and "pixdex_idle" in body
    memory = served.get("/status")["memory"]
    assert {"serving process", "indexing process"} <= set(memory["pss"]) and memory["total_pss"] > 0
    spec = served.get("/openapi.json")
    assert spec["openapi"].startswith("3.")
    assert os.getuid() >= 0


def test_patch_item_writes_the_sidecar_and_the_indexes_without_inference(served: Served) -> None:
    import subprocess as sp

    image = served.folders[0] / "city" / "old_tram.bmp"
    import time

    wait_for(lambda: served.idle() and time.time() - served.status()["daemon"]["last_scan"].get("at", 0) > 2,
             timeout=30, what="earlier changes to settle")
    item = served.listed()[str(image)]
    before = served.get(f"/items/{item}")
    machine = before["tags"][0]["name"]
    committed = served.status()["progress"]["committed"]
    body = json.dumps({"add_tags": ["grandma's tram"], "remove_tags": [machine],
                       "description": "Tram 7 at the depot"}).encode()
    status, after = served.raw("PATCH", f"/items/{item}", {"Host": "localhost", "Content-Type": "application/json"},
                               body)
    assert status == 200, after
    names = [t["name"] for t in after["tags"]]  # type: ignore[index]
    assert "grandma's tram" in names and machine not in names
    hits = served.get("/search", q='tag:"grandma\'s tram"', k=5)["hits"]
    assert [h["id"] for h in hits] == [item]
    depot = served.get("/search", q="depot", k=5)["hits"]
    assert [h["id"] for h in depot if h["text_rank"] is not None] == [item]  # the text side finds only it
    assert item not in [h["id"] for h in served.get("/search", q=f"tag:{machine}", k=50)["hits"]]
    assert served.status()["progress"]["committed"] == committed  # no inference
    sidecar = image.with_name(image.name + ".xmp")
    exiftool = shutil.which("exiftool")
    if exiftool:
        out = sp.run([exiftool, "-j", "-Subject", "-HierarchicalSubject", "-TagsList", "-Description", str(sidecar)],
                     capture_output=True, text=True, check=True).stdout
        read = json.loads(out)[0]
        assert "grandma's tram" in str(read["Subject"]) and "grandma's tram" in str(read["TagsList"])
        assert machine not in str(read.get("Subject", "")) and f"pixdex|{machine}" not in str(
            read.get("HierarchicalSubject", ""))
        assert read["Description"] == "Tram 7 at the depot"
    status, refused = served.raw("PATCH", f"/items/{item}", {"Host": "localhost", "Content-Type": "application/json"},
                                 json.dumps({"add_tags": ["a\nb"]}).encode())
    assert status == 400 and refused["parameter"] == "add_tags"  # type: ignore[index]


def test_events_resume_after_last_event_id(served: Served) -> None:
    import aiohttp

    async def read(headers: dict[str, str], until: str) -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        connector = aiohttp.UnixConnector(path=str(served.socket_path))
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.get("http://localhost/events", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=30)) as response:
            event_id = 0
            async for line in response.content:
                text = line.decode().strip()
                if text.startswith("id: "):
                    event_id = int(text[4:])
                elif text.startswith("event: "):
                    seen.append((event_id, text[7:]))
                    if text[7:] == until:
                        return seen
        return seen

    async def scenario() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        loop = asyncio.get_running_loop()
        first_task = asyncio.ensure_future(read({}, "paused"))
        await asyncio.sleep(0.5)
        await loop.run_in_executor(None, served.post, "/pause")
        first = await first_task
        await loop.run_in_executor(None, served.post, "/resume")  # happens while no client listens
        await loop.run_in_executor(None, served.post, "/pause")
        await loop.run_in_executor(None, served.post, "/resume")
        again = await read({"Last-Event-ID": str(first[-1][0])}, "resumed")
        return first, again

    first, again = asyncio.run(scenario())
    assert again[0][0] > first[-1][0]  # nothing before the id given is sent again
    assert [kind for _, kind in again if kind in ("paused", "resumed")][:1] == ["resumed"]  # missed ones arrive


def test_odd_requests_get_a_clear_400_naming_what_is_wrong(served: Served, tmp_path: Path) -> None:
    local = {"Host": "localhost", "Content-Type": "application/json"}
    status, body = served.raw("POST", "/reindex", local, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and body["parameter"] == "body"  # type: ignore[index]
    status, body = served.raw("POST", "/reindex", local, json.dumps({"pathz": ["/x"]}).encode())
    assert status == 400 and body["parameter"] == "pathz"  # type: ignore[index]
    status, body = served.raw("POST", "/reindex", local, json.dumps({"paths": ["/etc/passwd"]}).encode())
    assert status == 400 and "not in a watched folder" in body["error"]  # type: ignore[index]
    cjk = "猫" * 1500  # 1,500 characters, 13.5 kB once URL-encoded: the validator answers, not the HTTP parser
    status, body = served.raw("GET", "/search?q=" + quote(cjk), {"Host": "localhost"})
    assert status == 200
    out = subprocess.run([str(PIXDEX), "--config", str(served.config), "search", "a" * 10_000], env=served.environ,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "at most 2000 are allowed (server.max_query_chars)" in out.stderr
    out = subprocess.run([str(PIXDEX), "--config", str(served.config), "search", " "], env=served.environ,
                         capture_output=True, text=True)  # said as without a daemon, not as the HTTP parameter
    assert out.returncode == 2 and "' ': nothing to look for; type words" in out.stderr and " q " not in out.stderr


def test_reload_command_reaches_the_daemon(served: Served) -> None:
    out = subprocess.run([str(PIXDEX), "--config", str(served.config), "reload"], env=served.environ,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "re-read its config" in out.stdout
    wait_for(lambda: "config reloaded" in served.log.read_text(), what="the reload in the log")
    assert served.get("/health")["ok"]


def test_search_by_uploaded_images_with_weights(served: Served, tmp_path: Path) -> None:
    """POST /search embeds the upload in the worker processes; a weight of -1 pushes its look-alikes down,
    and `pixdex similar` on an image that is not indexed goes this way through the daemon."""
    probe = served.folders[0] / "garden" / "red_flower.png"
    client = served.client
    toward = client.upload("/search", {"k": "3"}, [("image", "probe.png", probe.read_bytes())])
    assert toward["hits"] and toward["hits"][0]["vector_rank"] == 1
    item = served.listed()[str(probe)]
    assert toward["hits"][0]["id"] == item  # its own indexed copy is nearest
    away = client.upload("/search", {"k": "50", "weight": "-1"}, [("image", "probe.png", probe.read_bytes())])
    assert away["hits"][-1]["id"] == item or item not in [h["id"] for h in away["hits"][:3]]
    outside = tmp_path / "not_indexed.png"
    shutil.copy(probe, outside)
    out = subprocess.run([str(PIXDEX), "--config", str(served.config), "similar", str(outside), "-k", "2", "--json"],
                         env=served.environ, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hits"][0]["id"] == item
    status, body = served.raw("POST", "/search",
                              {"Host": "localhost", "Content-Type": "multipart/form-data; boundary=x"},
                              b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.txt"\r\n'
                              b"Content-Type: text/plain\r\n\r\nhello\r\n--x--\r\n")
    assert status == 400 and body["parameter"] == "image"  # type: ignore[index]


def test_the_indexed_event_leaves_out_a_keyword_the_person_removed(served: Served) -> None:
    """A machine keyword removed in the sidecar is rejected: when the image is indexed again the models find it
    once more, but neither the index nor the `indexed` event lists it."""
    first = str(served.folders[0] / "garden" / "green_leaves.png")
    image_id = served.listed()[first]
    machine = [t["name"] for t in served.get(f"/items/{image_id}")["tags"] if t.get("category") != "person"]
    assert machine
    removed = machine[0]
    served.client.request("PATCH", f"/items/{image_id}", body={"remove_tags": [removed]})

    async def run() -> dict[str, object]:
        connector = aiohttp.UnixConnector(path=str(served.socket_path))
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.get("http://localhost/events", timeout=aiohttp.ClientTimeout(total=60)) as response:
            await asyncio.get_running_loop().run_in_executor(None, served.post, "/reindex", {"paths": [first]})
            async for kind, data in sse_events(response):
                if kind == "indexed" and data.get("id") == image_id and not data.get("edited"):
                    return dict(data)
        raise AssertionError("no indexed event")

    import aiohttp

    event = asyncio.run(run())
    assert removed not in event["tags"] and event["tags"], event
    assert removed not in [t["name"] for t in served.get(f"/items/{image_id}")["tags"]]
