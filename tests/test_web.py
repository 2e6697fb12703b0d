"""The web page: one-time login links and session cookies on the real daemon (what they let in, what
they refuse), and the page itself driven in Debian's headless Chromium by Playwright — search, open a
result, edit a keyword (the sidecar changes, read back with exiftool), live indexing progress — with a
screenshot kept as a test artifact (tests/artifacts/, or $PIXDEX_TEST_ARTIFACTS)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PIXDEX, REPO, make_library, noise
from served import Served, wait_for

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("web")
    pics, other = root / "pics", root / "other"
    make_library(pics)
    other.mkdir()
    noise(60).save(other / "phone_only_boat.jpg")
    daemon = Served(root, model_dir, [pics, other]).start()
    wait_for(lambda: daemon.idle() and daemon.status()["counts"]["done"] == 10, timeout=60, what="the library")
    yield daemon
    daemon.stop()


class Browser:
    """http.client against the loopback listener, keeping the session cookie like a browser."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
                ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Host": f"127.0.0.1:{self.port}", **({"Cookie": self.cookie} if self.cookie else {}), **(headers or {})}
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
        if "set-cookie" in found and "pixdex_session=" in found["set-cookie"]:
            self.cookie = found["set-cookie"].split(";")[0]
        connection.close()
        return response.status, found, data

    def login(self, url: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", url.split(str(self.port), 1)[1])


def ticket(site: Served, **body: object) -> str:
    return str(site.post("/login/ticket", body)["url"])


def test_a_login_link_works_once_and_its_cookie_is_httponly_and_same_site(site: Served) -> None:
    browser = Browser(site.port)
    status, headers, body = browser.request("GET", "/")
    assert status == 401 and b"pixdex open" in body and not browser.cookie  # no data, only how to log in
    assert browser.request("GET", "/search?q=beach")[0] == 401
    url = ticket(site, next="/?q=beach")
    status, headers, _ = browser.login(url)
    assert status == 303 and headers["location"] == "/?q=beach"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    status, headers, page = browser.request("GET", "/")
    assert status == 200 and b'<script src="/static/app.js"' in page
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    status, _, data = browser.request("GET", "/search?q=beach&k=5")
    assert status == 200 and json.loads(data)["hits"]
    status, headers, _ = browser.login(url)  # spent, but this browser is logged in: on to the page
    assert status == 303 and headers["location"] == "/?q=beach" and "set-cookie" not in headers
    again = Browser(site.port)
    status, _, body = again.login(url)  # spent
    assert status == 403 and b"used already or has expired" in body and not again.cookie
    assert Browser(site.port).request("GET", "/login?ticket=not-a-ticket")[0] == 403


def test_login_links_refuse_open_redirects_foreign_hosts_and_cross_origin_writes(site: Served) -> None:
    browser = Browser(site.port)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        status, body = site.raw("POST", "/login/ticket", {"Host": "localhost", "Content-Type": "application/json"},
                                json.dumps({"next": target}).encode())
        assert status == 400 and body["parameter"] == "next", target  # type: ignore[index]
    url = ticket(site)
    forged = url.replace("next=%2F", "next=%2F%2Fevil.example%2F")
    status, headers, _ = browser.login(forged)
    assert status == 303 and headers["location"] == "/"  # a link's next is a path of this site, or "/"
    assert browser.request("GET", "/", {"Host": "evil.example"})[0] == 403  # DNS rebinding
    status, _, data = browser.request("POST", "/pause", {"Origin": "http://evil.example", "Content-Type":
                                                         "application/json"}, b"{}")
    assert status == 403 and json.loads(data)["parameter"] == "Origin"
    status, _, data = browser.request("POST", "/pause", {"Sec-Fetch-Site": "cross-site"}, b"{}")
    assert status == 403
    other_port = f"http://127.0.0.1:{site.port + 1}"  # another local server's page: SameSite lets the cookie go
    status, _, data = browser.request("POST", "/pause", {"Origin": other_port, "Content-Type": "application/json"},
                                      b"{}")
    assert status == 403 and json.loads(data)["parameter"] == "Origin"
    own = f"http://127.0.0.1:{site.port}"
    status, _, _ = browser.request("POST", "/resume", {"Origin": own, "Content-Type": "application/json"}, b"{}")
    assert status == 200  # the page itself
    assert not site.status()["daemon"]["paused"]
    session = browser.cookie
    status, headers, _ = browser.request("POST", "/logout", {"Content-Type": "application/json"}, b"{}")
    assert status == 200 and 'pixdex_session=""' in headers["set-cookie"]
    browser.cookie = session  # sent again anyway: the daemon forgot it
    assert browser.request("GET", "/search?q=beach")[0] == 401


def test_a_link_limited_to_a_collection_sees_only_it(site: Served) -> None:
    browser = Browser(site.port)
    browser.login(ticket(site, only=["other"]))
    status, _, data = browser.request("GET", "/search?q=boat&k=50")
    hits = json.loads(data)["hits"]
    assert status == 200 and hits and all(h["path"].startswith(str(site.folders[1]) + "/") for h in hits)
    inside = site.get("/search", q="beach", k=1)["hits"][0]["id"]  # in pics, not in other
    assert browser.request("GET", f"/items/{inside}")[0] == 404
    assert browser.request("GET", f"/thumbnail/{inside}")[0] == 404
    status, _, data = browser.request("POST", "/login/ticket", {"Content-Type": "application/json"},
                                      json.dumps({"only": ["pics"]}).encode())
    assert status == 403  # a session cannot make a link that sees more than itself
    status, _, data = browser.request("POST", "/login/ticket", {"Content-Type": "application/json"},
                                      json.dumps({"only": ["nowhere"]}).encode())
    assert status == 400 and "there are" in json.loads(data)["error"]
    status, _, _ = browser.request("POST", "/pause", {"Content-Type": "application/json"}, b"{}")
    assert status == 403  # pausing needs full access


def test_a_revoked_token_and_the_sessions_it_made_stop_at_once(site: Served) -> None:
    def pixdex(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PIXDEX), "--config", str(site.config), "token", *args], env=site.environ,
                              capture_output=True, text=True, timeout=60)

    typo = pixdex("--new", "--only", "OTHER,holidys")
    assert typo.returncode == 2 and "no collection is named 'holidys'; there are: other, pics" in typo.stderr
    made = pixdex("--new", "--only", "other", "--label", "phone")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    listing = pixdex("--list", "--json")
    assert secret not in listing.stdout and secret not in pixdex("--list").stdout  # ids, never the tokens
    phone = [t for t in json.loads(listing.stdout) if t["label"] == "phone"]
    assert len(phone) == 1 and phone[0]["collections"] == ["other"] and phone[0]["id"] in made.stderr
    bearer = {"Host": "127.0.0.1", "Authorization": f"Bearer {secret}"}
    assert site.raw("GET", "/search?q=boat", bearer, tcp=True)[0] == 200
    status, body = site.raw("POST", "/login/ticket", {**bearer, "Content-Type": "application/json"}, b"{}", tcp=True)
    assert status == 200
    browser, linked = Browser(site.port), Browser(site.port)
    browser.login(str(body["url"]))  # type: ignore[index]
    status, _, data = browser.request("POST", "/login/ticket", {"Content-Type": "application/json"}, b"{}")
    linked.login(json.loads(data)["url"])  # a link made in the web page of that session
    for each in (browser, linked):
        status, _, data = each.request("GET", "/search?q=boat&k=50")
        assert status == 200 and json.loads(data)["hits"]
    stream = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
    stream.request("GET", "/events", headers=bearer)
    events = stream.getresponse()
    assert events.status == 200 and events.readline() == b"retry: 2000\n"
    gone = pixdex("--revoke", "phone")
    assert gone.returncode == 0 and phone[0]["id"] in gone.stdout, gone.stderr
    revoked = time.monotonic()
    rest, deadline = b"", revoked + 20
    while (chunk := events.read1(65536)) and time.monotonic() < deadline:  # keep-alives come every 15 s
        rest += chunk
    assert not chunk and time.monotonic() - revoked < 5, f"the stream of a revoked token goes on: {rest[-200:]!r}"
    stream.close()
    status, body = site.raw("GET", "/search?q=boat", bearer, tcp=True)
    assert status == 401 and "revoked" in body["error"]  # type: ignore[index]
    for each in (browser, linked):
        status, _, data = each.request("GET", "/search?q=boat&k=50")
        assert status == 401 and "session has ended" in json.loads(data)["error"] and "pixdex open" in data.decode()
    full = {"Host": "127.0.0.1", "Authorization": f"Bearer {site.token()}"}
    assert site.raw("GET", "/search?q=boat", full, tcp=True)[0] == 200  # the others go on
    again = pixdex("--revoke", "phone")
    assert again.returncode == 2 and "no token has the id or label 'phone'" in again.stderr
    assert "4 characters" in pixdex("--revoke", phone[0]["id"][:3]).stderr
    assert pixdex("--new", "--label", "tablet").returncode == 0
    twice = pixdex("--new", "--label", "tablet")
    assert twice.returncode == 2 and "labelled 'tablet' already" in twice.stderr
    assert "printable" in pixdex("--new", "--label", "two\nlines").stderr
    assert pixdex("--list", "--new").returncode == 2


def test_a_browser_stays_logged_in_across_a_restart_and_a_logout_is_kept_too(site: Served) -> None:
    kept, left = Browser(site.port), Browser(site.port)
    kept.login(ticket(site))
    left.login(ticket(site))
    left_cookie = left.cookie
    assert left.request("POST", "/logout", {"Content-Type": "application/json"}, b"{}")[0] == 200
    stored = site.root / "state" / "pixdex" / "web-sessions.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert kept.cookie.split("=", 1)[1] not in stored.read_text()  # hashes only: nothing a browser could present
    site.stop()
    site.start()
    status, _, data = kept.request("GET", "/search?q=beach&k=5")
    assert status == 200 and json.loads(data)["hits"]
    left.cookie = left_cookie  # sent again after the restart: still logged out
    assert left.request("GET", "/search?q=beach")[0] == 401


def test_pixdex_open_prints_a_link_and_says_when_no_daemon_runs(site: Served, tmp_path: Path) -> None:
    printed = subprocess.run([str(PIXDEX), "--config", str(site.config), "open", "--print-url", "red", "flower"],
                             env=site.environ, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["next"] == ["/?q=red+flower"]
    assert Browser(site.port).login(link)[0] == 303
    lan = subprocess.run([str(PIXDEX), "--config", str(site.config), "open", "--lan"], env=site.environ,
                         capture_output=True, text=True, timeout=60)
    assert lan.returncode == 2 and "LAN access is off" in lan.stderr
    environ = {**site.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    alone = subprocess.run([str(PIXDEX), "--config", str(site.config), "open"], env=environ, capture_output=True,
                           text=True, timeout=60)
    assert alone.returncode == 2 and "no pixdex daemon answers" in alone.stderr and "pixdex serve" in alone.stderr
    # a browser that cannot start (xdg-open exits 3), and one that does
    for opener, code in (("false", 2), ("true", 0)):
        config = tmp_path / f"{opener}.toml"
        config.write_text(site.config.read_text() + f'\n[desktop]\nopener = "{opener}"\n')
        opened = subprocess.run([str(PIXDEX), "--config", str(config), "open", "boat"], env=site.environ,
                                capture_output=True, text=True, timeout=60)
        assert opened.returncode == code, opened.stderr
        said = "could not open it (exit 1); open this link in a browser yourself" if code else "opened the web page"
        assert said in opened.stderr and "/login?ticket=" in opened.stderr


def test_lan_links_are_served_on_the_lan_listener_with_a_qr_code(tmp_path: Path, model_dir: Path) -> None:
    from served import free_port

    pics = tmp_path / "pics"
    pics.mkdir()
    noise(1).save(pics / "lan_photo.jpg")
    lan_port = free_port()
    daemon = Served(tmp_path, model_dir, [pics], extra=f'lan = "127.0.0.2"\nlan_port = {lan_port}\n').start()
    try:
        wait_for(lambda: daemon.idle() and len(daemon.listed()) == 1, timeout=60, what="the photo")
        printed = subprocess.run([str(PIXDEX), "--config", str(daemon.config), "open", "--lan"], env=daemon.environ,
                                 capture_output=True, text=True, timeout=60)
        assert printed.returncode == 0, printed.stderr
        link = printed.stdout.strip().splitlines()[-1].split(": ", 1)[1]
        assert link.startswith(f"http://127.0.0.2:{lan_port}/login?") and "█" in printed.stdout  # the QR code
        phone = http.client.HTTPConnection("127.0.0.2", lan_port, timeout=30)
        phone.request("GET", link.split(str(lan_port), 1)[1], headers={"Host": f"127.0.0.2:{lan_port}"})
        answer = phone.getresponse()
        answer.read()
        assert answer.status == 303
        cookie = answer.getheader("Set-Cookie", "").split(";")[0]
        phone.request("GET", "/search?q=lan_photo", headers={"Host": f"127.0.0.2:{lan_port}", "Cookie": cookie})
        found = phone.getresponse()
        assert found.status == 200 and json.loads(found.read())["hits"]
        phone.request("GET", "/search?q=lan_photo", headers={"Host": f"127.0.0.2:{lan_port}"})
        refused = phone.getresponse()
        refused.read()
        assert refused.status == 401  # the LAN listener needs a session or a token too
        phone.request("GET", "/qr.svg?text=hello", headers={"Host": f"127.0.0.2:{lan_port}", "Cookie": cookie})
        svg = phone.getresponse()
        assert svg.status == 200 and svg.read().startswith(b"<svg")
    finally:
        daemon.stop()


# The page in a real browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    sync = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        from conftest import tool

        tool("chromium", "chromium")
    with sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def artifacts() -> Path:
    folder = Path(os.environ.get("PIXDEX_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.slow
def test_the_page_searches_opens_a_result_edits_a_keyword_and_shows_progress(
        site: Served, chromium: object, exiftool: str) -> None:
    page = chromium.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto(ticket(site, next="/?q=red+flower"))
        page.wait_for_selector(".cell")
        expected = [h["id"] for h in site.get("/search", q="red flower", k=500)["hits"]]
        shown = page.eval_on_selector_all(".cell", "cells => cells.map(c => c.dataset.id)")
        assert [int(i) for i in shown] == expected[:len(shown)] and shown  # the daemon's order
        page.wait_for_function("() => document.querySelector('.cell img').naturalWidth > 0")  # thumbnails load

        page.fill("#q", "garden ext:png")
        page.press("#q", "Enter")
        page.wait_for_function("() => document.querySelector('#summary').textContent.includes('image')")
        names = page.eval_on_selector_all(".cell .name", "n => n.map(x => x.textContent)")
        assert names and all(n.endswith(".png") for n in names) and "red_flower.png" in names
        page.click(".cell[title$='red_flower.png']")
        page.wait_for_selector("#detail[open]")
        assert page.text_content("#detail-name") == "red_flower.png"
        page.wait_for_selector("#detail-similar .mini")  # similar images

        page.fill("#new-tag", "rose garden")
        page.click("#add-tag button")
        page.wait_for_function("() => document.querySelector('#edit-status').textContent === 'saved to the sidecar'")
        tags = page.eval_on_selector_all("#detail-tags .tag-name", "t => t.map(x => x.textContent)")
        assert "rose garden" in tags
        flower = site.folders[0] / "garden" / "red_flower.png"
        subjects = json.loads(subprocess.run([exiftool, "-j", "-XMP-dc:Subject", str(flower) + ".xmp"],
                                             capture_output=True, text=True, check=True).stdout)[0]
        assert "rose garden" in subjects.get("Subject", [])
        page.fill("#description", "A red flower in the garden")
        page.click("#edit-description button")
        page.wait_for_function("() => document.querySelector('#edit-status').textContent === 'saved to the sidecar'")
        described = json.loads(subprocess.run([exiftool, "-j", "-XMP-dc:Description", str(flower) + ".xmp"],
                                              capture_output=True, text=True, check=True).stdout)[0]
        assert described["Description"] == "A red flower in the garden"
        assert page.input_value("#description") == "A red flower in the garden"  # read back from the daemon
        page.screenshot(path=str(artifacts() / "web-detail.png"))
        page.keyboard.press("Escape")

        # Live progress: a new image, indexed while the page watches the event stream.
        noise(61).save(site.folders[0] / "arrived_while_watching.jpg")
        page.wait_for_function(
            "() => document.querySelector('#progress-text').textContent.includes('arrived_while_watching.jpg')"
            " || document.querySelector('#progress-text').textContent.startsWith('indexing')", timeout=30_000)
        page.click("#pause")
        wait_for(lambda: site.status()["daemon"]["paused"], timeout=10, what="the page's pause")
        page.wait_for_function("() => document.querySelector('#pause').textContent === 'Resume indexing'")
        page.click("#pause")
        wait_for(lambda: not site.status()["daemon"]["paused"], timeout=10, what="the page's resume")
        page.fill("#q", "red flower")
        page.press("#q", "Enter")
        page.wait_for_selector(".cell")
        page.screenshot(path=str(artifacts() / "web-page.png"), full_page=False)
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.slow
def test_the_grid_draws_only_what_is_in_view(tmp_path: Path, model_dir: Path, chromium: object) -> None:
    pics = tmp_path / "pics"
    for n in range(250):
        folder = pics / f"f{n // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        noise(1000 + n, (32, 24)).save(folder / f"many_{n:03d}.png")
    daemon = Served(tmp_path, model_dir, [pics]).start()
    page = chromium.new_page(viewport={"width": 1000, "height": 700})  # type: ignore[attr-defined]
    try:
        wait_for(lambda: daemon.idle() and daemon.status()["counts"]["done"] == 250, timeout=120, what="250 images")
        page.goto(str(daemon.post("/login/ticket", {"next": "/?q=ext:png"})["url"]))
        page.wait_for_function("() => document.querySelector('#summary').textContent.startsWith('250 images')")
        drawn = page.eval_on_selector_all(".cell", "c => c.length")
        assert 0 < drawn < 80  # a few rows, not 250 cells
        page.eval_on_selector("#scroller", "s => { s.scrollTop = s.scrollHeight; }")
        page.wait_for_function("() => [...document.querySelectorAll('.cell')].some(c => c.dataset.index === '249')")
        assert page.eval_on_selector_all(".cell", "c => c.length") < 80
    finally:
        page.close()
        daemon.stop()
