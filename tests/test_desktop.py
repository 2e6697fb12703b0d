"""pixdex in the desktop: the GNOME Shell and KRunner search providers on a private session bus (Debian's
dbus-daemon, activated through the `.service` file `pixdex integrate install` writes), called with `gdbus`
and with a Python D-Bus client, answering from the real daemon within their time box; the file-manager
actions and desktop entries `integrate` installs (checked with `desktop-file-validate`, Thunar's uca.xml
merged without losing a person's actions)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PIXDEX, make_library, solid, tool
from served import Served, wait_for

# Imported at collection, on one thread: importing it inside a test while the harness's reader threads run
# once raised KeyError from importlib's module lock (CPython 3.11).
MessageBus = pytest.importorskip("dbus_fast.aio").MessageBus
GNOME = ("/org/pixdex/Search/GnomeShell", "org.gnome.Shell.SearchProvider2")
KRUNNER = ("/org/pixdex/Search/KRunner", "org.kde.krunner1")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class Desktop:
    """A daemon with a library, a private session bus whose activation runs `pixdex dbus`, and an opener
    that writes down what it was asked to open."""

    def __init__(self, root: Path, model_dir: Path, answer_ms: int) -> None:
        from pixdex.daemon import integrate

        self.root = root
        self.pics = root / "pics"
        make_library(self.pics)
        self.opened = root / "opened.txt"
        opener = root / "opener.sh"
        opener.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{self.opened}"\n')
        opener.chmod(0o755)
        self.daemon = Served(root, model_dir, [self.pics],
                             extra=f'[desktop]\nopener = "{opener}"\nanswer_ms = {answer_ms}\n').start()
        wait_for(lambda: self.daemon.idle() and len(self.daemon.listed()) == 9, timeout=60, what="the library")
        self.environ = dict(self.daemon.environ)
        integrate.install(str(PIXDEX), self.environ)  # the .service file the bus activates
        services = Path(self.environ["XDG_DATA_HOME"]) / "dbus-1" / "services"
        self.bus_socket = root / "bus"
        config = root / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=self.bus_socket, services=services))
        dbus_daemon = tool("dbus-daemon", "dbus")
        self.bus = subprocess.Popen([dbus_daemon, f"--config-file={config}", "--nofork", "--nopidfile"],
                                    env=self.environ, start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        wait_for(self.bus_socket.exists, timeout=10, what="the session bus")
        self.address = f"unix:path={self.bus_socket}"
        self.environ["DBUS_SESSION_BUS_ADDRESS"] = self.address

    def gdbus(self, where: tuple[str, str], method: str, *args: str, timeout: float = 30) -> str:
        gdbus = tool("gdbus", "libglib2.0-bin")
        proc = subprocess.run([gdbus, "call", "--address", self.address, "--dest", "org.pixdex.Search",
                               "--object-path", where[0], "--method", f"{where[1]}.{method}", *args],
                              capture_output=True, text=True, timeout=timeout, env=self.environ)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def opened_lines(self) -> list[str]:
        return self.opened.read_text().splitlines() if self.opened.exists() else []

    def close(self) -> None:
        os.killpg(self.bus.pid, signal.SIGTERM)  # the bus and the provider it started
        self.bus.wait(10)
        subprocess.run(["pkill", "-f", f"{PIXDEX} dbus"], check=False, env=self.environ)
        self.daemon.stop()


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Desktop]:
    setup = Desktop(tmp_path_factory.mktemp("desktop"), model_dir, answer_ms=3000)  # correctness, not speed
    yield setup
    setup.close()


def strings(gvariant_text: str) -> list[str]:
    return re.findall(r"'((?:[^'\\]|\\.)*)'", gvariant_text)


def search_ids(daemon: Served, query: str, k: int = 12) -> list[str]:
    return [str(h["id"]) for h in daemon.get("/search", q=query, k=k)["hits"]]


def test_gnome_shell_provider_is_activated_and_answers_as_the_daemon_does(desktop: Desktop) -> None:
    ids = strings(desktop.gdbus(GNOME, "GetInitialResultSet", "['red', 'flower']", timeout=60))
    assert ids and ids == search_ids(desktop.daemon, "red flower")
    narrowed = strings(desktop.gdbus(GNOME, "GetSubsearchResultSet", str(ids), "['red', 'flower', 'garden']"))
    assert narrowed == search_ids(desktop.daemon, "red flower garden")
    metas = desktop.gdbus(GNOME, "GetResultMetas", str(ids[:3]))
    paths = {str(h["id"]): h["path"] for h in desktop.daemon.get("/search", q="red flower", k=12)["hits"]}
    for image_id in ids[:3]:
        assert f"'id': <'{image_id}'>" in metas and f"<'{Path(paths[image_id]).name}'>" in metas
    icons = re.findall(r"'gicon': <'([^']*)'>", metas)
    assert len(icons) == 3 and all(Path(i).is_file() and Path(i).stat().st_size > 0 for i in icons)  # thumbnails
    assert strings(desktop.gdbus(GNOME, "GetInitialResultSet", "['re']")) == []  # below desktop.min_query
    assert strings(desktop.gdbus(GNOME, "GetInitialResultSet", "['빨간']")) == search_ids(desktop.daemon, "빨간")

    desktop.gdbus(GNOME, "ActivateResult", f"'{ids[0]}'", "['red', 'flower']", "0")
    wait_for(lambda: paths[ids[0]] in desktop.opened_lines(), timeout=10, what="the image to be opened")
    other = next(h for h in desktop.daemon.get("/search", q="ext:bmp", k=5)["hits"])  # never shown by this provider
    desktop.gdbus(GNOME, "ActivateResult", f"'{other['id']}'", "['tram']", "0")
    wait_for(lambda: other["path"] in desktop.opened_lines(), timeout=10, what="an id from before to be opened")
    assert "'name': <'old_tram.bmp'>" in desktop.gdbus(GNOME, "GetResultMetas", f"['{other['id']}', '12345']")
    desktop.gdbus(GNOME, "LaunchSearch", "['red', 'flower']", "0")
    link = wait_for(lambda: next((line for line in desktop.opened_lines() if "/login?" in line), None),
                    timeout=10, what="the web page to be opened")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["next"] == ["/?q=red+flower"]
    connection = http.client.HTTPConnection("127.0.0.1", desktop.daemon.port, timeout=10)
    connection.request("GET", link.split(str(desktop.daemon.port), 1)[1])
    response = connection.getresponse()
    assert response.status == 303 and response.getheader("Location") == "/?q=red+flower"


def test_krunner_runner_matches_and_runs_its_actions(desktop: Desktop) -> None:
    async def call() -> tuple[list[list[object]], list[list[str]]]:
        bus = await MessageBus(bus_address=desktop.address).connect()
        try:
            introspection = await bus.introspect("org.pixdex.Search", KRUNNER[0])
            runner = bus.get_proxy_object("org.pixdex.Search", KRUNNER[0], introspection).get_interface(KRUNNER[1])
            matches = await runner.call_match("beach sunset")
            actions = await runner.call_actions()
            await runner.call_run(str(matches[0][0]), "open-folder")
            await runner.call_run(str(matches[0][0]), "similar")
            await runner.call_run(str(matches[0][0]), "")
            return matches, actions
        finally:
            bus.disconnect()

    matches, actions = asyncio.run(call())
    expected = desktop.daemon.get("/search", q="beach sunset", k=12)["hits"]
    assert [m[0] for m in matches] == [str(h["id"]) for h in expected]
    first = matches[0]
    assert first[1] == Path(expected[0]["path"]).name and first[3] == 30 and 0 < first[4] <= 1
    assert first[5]["urls"].value == ["file://" + urllib.parse.quote(expected[0]["path"])]
    assert [a[0] for a in actions] == ["open-folder", "similar"]
    wait_for(lambda: len(desktop.opened_lines()) >= 3, timeout=10, what="three actions")
    lines = desktop.opened_lines()
    assert str(Path(expected[0]["path"]).parent) in lines and expected[0]["path"] in lines
    similar = next(line for line in lines if "similar" in line)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(similar).query)["next"] == [f"/?similar={first[0]}"]


def test_an_edited_image_gets_a_new_icon_and_the_old_one_goes(desktop: Desktop) -> None:
    def shown_icon() -> tuple[str, Path]:
        image_id = strings(desktop.gdbus(GNOME, "GetInitialResultSet", "['scan', 'archive']"))[0]
        icons = re.findall(r"'gicon': <'([^']*)'>", desktop.gdbus(GNOME, "GetResultMetas", f"['{image_id}']"))
        return image_id, Path(icons[0])

    def thumbnail(image_id: str) -> bytes:
        status, body = desktop.daemon.raw("GET", f"/thumbnail/{image_id}?size=128", {"Host": "localhost"})
        assert status == 200 and isinstance(body, bytes)
        return body

    image = desktop.pics / "city" / "scan_archive.tiff"
    image_id, before = shown_icon()
    assert Path(desktop.daemon.get(f"/items/{image_id}")["path"]) == image
    old = before.read_bytes()
    assert old == thumbnail(image_id)
    mtime = desktop.daemon.get(f"/items/{image_id}")["mtime_ns"]
    solid((250, 240, 20), (120, 90)).save(image)  # edited in place: same file, same id, new pixels
    wait_for(lambda: desktop.daemon.get(f"/items/{image_id}")["mtime_ns"] != mtime and desktop.daemon.idle(),
             timeout=30, what="the edit to be indexed")
    again, after = shown_icon()
    assert again == image_id and after != before and not before.exists()
    assert after.read_bytes() == thumbnail(image_id) != old


def test_the_icon_cache_keeps_the_most_recently_shown(tmp_path: Path) -> None:
    from pixdex.daemon.searcher import prune_icons

    for n in range(6):
        icon = tmp_path / f"{n}-1-128.img"
        icon.write_bytes(b"x")
        os.utime(icon, (1_000 + n, 1_000 + n))
    (tmp_path / ".7-1-128.img.99.tmp").write_bytes(b"left by a crash")
    os.utime(tmp_path / ".7-1-128.img.99.tmp", (1_000, 1_000))
    (tmp_path / ".8-1-128.img.99.tmp").write_bytes(b"being written")
    assert prune_icons(tmp_path, keep=4) == 3
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".8-1-128.img.99.tmp", *(f"{n}-1-128.img" for n in range(2, 6))]


def test_a_stalled_daemon_does_not_stall_the_shell(tmp_path: Path, model_dir: Path) -> None:
    """`desktop.answer_ms` (200 ms): what is ready by then — the results of what was typed a letter ago."""
    setup = Desktop(tmp_path, model_dir, answer_ms=200)
    try:
        wait_for(lambda: strings(setup.gdbus(GNOME, "GetInitialResultSet", "['beach']", timeout=60)),
                 timeout=60, what="a first answer")
        before = strings(setup.gdbus(GNOME, "GetInitialResultSet", "['beach']"))
        os.kill(setup.daemon.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            start = time.monotonic()
            typed_on = strings(setup.gdbus(GNOME, "GetInitialResultSet", "['beach', 'sunset']"))
            took = time.monotonic() - start
            assert typed_on == before  # not the daemon's answer (it is stopped): the one ready
            assert took < 2.0, took  # gdbus itself starts in well under a second
            assert strings(setup.gdbus(GNOME, "GetInitialResultSet", "['zebra']")) == []
        finally:
            os.kill(setup.daemon.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        wait_for(lambda: strings(setup.gdbus(GNOME, "GetInitialResultSet", "['beach', 'sunset']"))
                 == search_ids(setup.daemon, "beach sunset"), timeout=30, what="the late answer to be used")
    finally:
        setup.close()


# Files `integrate` installs -------------------------------------------------------------------------
def integrate_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "home" / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "home" / "config")}


def run_pixdex(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PIXDEX), *args], env=environ, capture_output=True, text=True, timeout=60)


PERSON_UCA = """<?xml version="1.0" encoding="UTF-8"?>
<!-- my own actions, keep them -->
<actions>
<action>
\t<icon>utilities-terminal</icon>
\t<name>Open Terminal Here</name>
\t<unique-id>1234567890-1</unique-id>
\t<command>exo-open --working-directory %f --launch TerminalEmulator</command>
\t<description>Example for a custom action</description>
\t<patterns>*</patterns>
\t<startup-notify/>
\t<directories/>
</action>
</actions>
"""


def test_integrate_installs_valid_files_keeps_a_persons_thunar_actions_and_removes_only_its_own(
        tmp_path: Path) -> None:
    environ = integrate_env(tmp_path)
    uca = Path(environ["XDG_CONFIG_HOME"]) / "Thunar" / "uca.xml"
    uca.parent.mkdir(parents=True)
    uca.write_text(PERSON_UCA)
    uca.chmod(0o600)
    mine = Path(environ["XDG_DATA_HOME"]) / "applications" / "mine.desktop"
    mine.parent.mkdir(parents=True)
    mine.write_text("[Desktop Entry]\nType=Application\nName=Mine\nExec=true\n")
    proc = run_pixdex(environ, "integrate", "install")
    assert proc.returncode == 0, proc.stderr
    assert "sudo install -D -m 644" in proc.stdout and "/usr/local/share/gnome-shell/search-providers" in proc.stdout
    data = Path(environ["XDG_DATA_HOME"])
    validate = tool("desktop-file-validate", "desktop-file-utils")
    for entry in (data / "applications" / "org.pixdex.Search.desktop",
                  data / "krunner" / "dbusplugins" / "org.pixdex.Search.desktop"):
        checked = subprocess.run([validate, str(entry)], capture_output=True, text=True)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout
    # Dolphin's service menus are KDE's own kind of desktop file: the validator knows only that MimeType and
    # Actions belong to applications; nothing else may be wrong with it.
    menu = data / "kio" / "servicemenus" / "pixdex.desktop"
    complaints = subprocess.run([validate, str(menu)], capture_output=True, text=True).stdout.strip().splitlines()
    assert all(re.search(r'key "(MimeType|Actions)" is present in group "Desktop Entry", but the type is '
                         r'"Service"', c) for c in complaints), complaints
    assert menu.stat().st_mode & 0o111  # Plasma 6 runs only executable service menus
    assert f"Exec={PIXDEX} open --notify --similar %F" in menu.read_text()
    service = (data / "dbus-1" / "services" / "org.pixdex.Search.service").read_text()
    assert f"Name=org.pixdex.Search\nExec={PIXDEX} dbus" in service
    scripts = sorted(p.name for p in (data / "nautilus" / "scripts" / "pixdex").iterdir())
    assert scripts == ["Describe ∕ re-tag now", "Find similar images", "Search images like these"]

    merged = uca.read_text()
    assert merged.startswith(PERSON_UCA.split("</actions>")[0])  # the person's part, byte for byte
    assert merged.count("<unique-id>pixdex-") == 3 and (uca.stat().st_mode & 0o777) == 0o600
    again = run_pixdex(environ, "integrate", "install")  # idempotent: still three, nothing doubled
    assert again.returncode == 0 and uca.read_text() == merged
    shown = run_pixdex(environ, "integrate", "status").stdout
    assert "Thunar actions: installed" in shown and "Dolphin menu: installed" in shown and "missing" in shown

    removed = run_pixdex(environ, "integrate", "remove")
    assert removed.returncode == 0, removed.stderr
    assert uca.read_text() == PERSON_UCA and mine.exists()
    assert not menu.exists() and not (data / "nautilus" / "scripts" / "pixdex").exists()


def test_thunar_file_that_is_not_well_formed_is_left_alone(tmp_path: Path) -> None:
    environ = integrate_env(tmp_path)
    uca = Path(environ["XDG_CONFIG_HOME"]) / "Thunar" / "uca.xml"
    uca.parent.mkdir(parents=True)
    uca.write_text("<actions><action>broken")
    proc = run_pixdex(environ, "integrate", "install")
    assert proc.returncode == 2 and "not well-formed XML" in proc.stderr and "uca.xml" in proc.stderr
    assert uca.read_text() == "<actions><action>broken"


def test_a_file_in_the_way_that_pixdex_did_not_write_is_not_overwritten(tmp_path: Path) -> None:
    environ = integrate_env(tmp_path)
    theirs = Path(environ["XDG_DATA_HOME"]) / "kio" / "servicemenus" / "pixdex.desktop"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("[Desktop Entry]\nType=Service\nName=someone else's\n")
    proc = run_pixdex(environ, "integrate", "install")
    assert proc.returncode == 2 and "a file pixdex did not write is there" in proc.stderr
    assert "someone else's" in theirs.read_text()


def test_file_manager_actions_open_the_page_on_images_like_the_selection_and_queue_retags(
        desktop: Desktop) -> None:
    """What Nautilus runs: its scripts with the selected files as arguments, in the folder shown."""
    data = Path(desktop.environ["XDG_DATA_HOME"]) / "nautilus" / "scripts" / "pixdex"
    folder = desktop.pics / "holiday"
    before = len(desktop.opened_lines())
    proc = subprocess.run([str(data / "Find similar images"), "beach_sunset_01.jpg", "beach_sunset_02.jpg"],
                          cwd=folder, env=desktop.environ, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    link = wait_for(lambda: desktop.opened_lines()[before:] and desktop.opened_lines()[-1], timeout=10,
                    what="the page to be opened")
    target = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["next"][0]
    ids = [str(desktop.daemon.client.get("/search", q=f"folder:{folder} {name}", k=1)["hits"][0]["id"])
           for name in ("beach_sunset_01", "beach_sunset_02")]
    assert target == "/?" + urllib.parse.urlencode({"similar": ",".join(ids)})
    connection = http.client.HTTPConnection("127.0.0.1", desktop.daemon.port, timeout=10)
    connection.request("GET", link.split(str(desktop.daemon.port), 1)[1])
    response = connection.getresponse()
    cookie = response.getheader("Set-Cookie", "").split(";")[0]
    response.read()
    assert response.status == 303 and cookie.startswith("pixdex_session=")
    connection.request("GET", f"/similar?id={ids[0]}&id={ids[1]}&k=5", headers={"Cookie": cookie})
    similar = json.loads(connection.getresponse().read())
    assert similar["hits"] and not {str(h["id"]) for h in similar["hits"]} & set(ids)

    retag = subprocess.run([str(data / "Describe ∕ re-tag now"), "beach_sunset_01.jpg"], cwd=folder,
                           env=desktop.environ, capture_output=True, text=True, timeout=60)
    assert retag.returncode == 0 and "1 image(s) queued" in retag.stdout, retag.stderr
    outside = subprocess.run([str(data / "Find similar images"), str(desktop.root / "opener.sh")],
                             env=desktop.environ, capture_output=True, text=True, timeout=60)
    assert outside.returncode == 2 and "not in a watched folder" in outside.stderr  # and a notification
    folder = subprocess.run([str(data / "Find similar images"), str(desktop.pics / "garden")], env=desktop.environ,
                            capture_output=True, text=True, timeout=60)
    assert folder.returncode == 2 and "a folder; select image files" in folder.stderr
    many = [str(p) for p in sorted(desktop.pics.rglob("*.*")) if not p.name.endswith(".xmp")] * 2
    before = len(desktop.opened_lines())
    too_many = subprocess.run([str(data / "Search images like these"), *many], env=desktop.environ,
                              capture_output=True, text=True, timeout=60)
    assert too_many.returncode == 2 and "at most 16 at once" in too_many.stderr
    assert len(desktop.opened_lines()) == before  # refused before a login link was spent on an error page


def test_contrib_copies_are_what_integrate_writes() -> None:
    from conftest import REPO

    from pixdex.daemon.integrate import contrib_files

    folder = REPO / "contrib" / "desktop"
    expected = contrib_files()
    found = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert found == set(expected)
    for name, (text, mode) in expected.items():
        assert (folder / name).read_text() == text, name
        assert (folder / name).stat().st_mode & 0o777 == mode, name
