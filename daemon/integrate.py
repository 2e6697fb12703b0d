"""`pixdex integrate install|remove|status`: pixdex in the desktop, for the current user.

What goes where (XDG_DATA_HOME is ~/.local/share, XDG_CONFIG_HOME ~/.config):

    dbus-1/services/org.pixdex.Search.service      D-Bus activation: the first search runs `pixdex dbus`
    applications/org.pixdex.Search.desktop         the app GNOME Shell names the provider after (opens the page)
    krunner/dbusplugins/org.pixdex.Search.desktop  KRunner's D-Bus runner
    kio/servicemenus/pixdex.desktop                Dolphin's right-click menu (executable, as Plasma 6 wants)
    nautilus/scripts/pixdex/<action>               Nautilus' Scripts menu, one executable per action
    ~/.config/Thunar/uca.xml                       Thunar's custom actions: ours merged in, the person's kept
    pixdex/integration/org.pixdex.Search.search-provider.ini
                                                   GNOME Shell reads search providers only from the system
                                                   data folders: `integrate install` prints the one command
                                                   (with sudo) that copies it there

The file-manager actions are "Find similar images", "Search images like these" (the web page, in its
similar-images view, for one or several files: the mean of their embeddings) and "Describe / re-tag now"
(`pixdex reindex`, first in the queue). Results open in the web page, not in a folder of symlinks: the
page shows the tags, lets a person correct them and find more, and a symlink folder goes stale.

Every file carries the marker "pixdex integrate" so `remove` takes away only what it wrote; writes are
atomic. contrib/desktop/ holds the renders for /usr/local/bin/pixdex, at the same paths (a test keeps them
equal); `integrate install` writes them with the absolute path of this installation's pixdex.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from pixdex.indexer.errors import PixdexError
from pixdex.indexer.files import (
    ChangedMeanwhile,
    Refused,
    atomic_write,
    owned_target,
    replace_owned,
    seen,
)

MARKER = "pixdex integrate"
BUS_NAME = "org.pixdex.Search"
IMAGE_TYPES = ("image/jpeg;image/png;image/webp;image/gif;image/bmp;image/tiff;image/heic;image/heif;image/avif;"
               "image/x-canon-cr2;image/x-nikon-nef;image/x-sony-arw;image/x-adobe-dng;image/x-fuji-raf;")
GNOME_INI_DIR = "/usr/local/share/gnome-shell/search-providers"
CONTRIB_PROGRAM = "/usr/local/bin/pixdex"  # D-Bus runs Exec= without a PATH search: the copies need a full path


@dataclass(frozen=True)
class Action:
    key: str
    name: str
    icon: str
    args: tuple[str, ...]  # after the pixdex command; the selected files follow


ACTIONS = (
    Action("similar", "Find similar images", "edit-find", ("open", "--notify", "--similar")),
    Action("like", "Search images like these", "system-search", ("open", "--notify", "--similar", "--narrow")),
    Action("retag", "Describe / re-tag now", "view-refresh", ("reindex", "--notify")),
)


class IntegrationError(PixdexError):
    pass


@dataclass(frozen=True)
class Target:
    path: Path
    text: str
    mode: int = 0o644
    what: str = ""


def data_home(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_DATA_HOME", "")
    return Path(base) if os.path.isabs(base) else Path(environ.get("HOME") or Path.home()) / ".local" / "share"


def config_home(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME", "")
    return Path(base) if os.path.isabs(base) else Path(environ.get("HOME") or Path.home()) / ".config"


def _command(program: str, *args: str) -> str:
    """A desktop-entry Exec line (quoted per the Desktop Entry spec)."""
    words = [program, *args]
    return " ".join(f'"{w}"' if re.search(r'[\s"\'\\$`]', w) else w for w in words)


# Renders ------------------------------------------------------------------------------------------
def dbus_service(program: str) -> str:
    return (f"# {MARKER}: D-Bus starts pixdex's search provider on the first search\n"
            f"[D-BUS Service]\nName={BUS_NAME}\nExec={_command(program, 'dbus')}\n")


def app_entry(program: str) -> str:
    return (f"# {MARKER}\n[Desktop Entry]\nType=Application\nName=pixdex\nGenericName=Image search\n"
            "Comment=Search your images by what they show\n"
            f"Exec={_command(program, 'open')}\nIcon=image-x-generic\nTerminal=false\n"
            "Categories=Graphics;Photography;Viewer;\nKeywords=photo;image;picture;search;tag;\n"
            f"X-GNOME-UsesNotifications=false\nDBusActivatable=false\n")


def gnome_ini() -> str:
    return (f"# {MARKER}: GNOME Shell reads this from {GNOME_INI_DIR} (or /usr/share/...) only\n"
            "[Shell Search Provider]\n"
            f"DesktopId={BUS_NAME}.desktop\nBusName={BUS_NAME}\nObjectPath=/org/pixdex/Search/GnomeShell\nVersion=2\n")


def krunner_entry() -> str:
    return (f"# {MARKER}\n[Desktop Entry]\nType=Service\nName=pixdex\nComment=Images by what they show\n"
            "Icon=image-x-generic\nX-KDE-PluginInfo-Author=pixdex\nX-KDE-PluginInfo-Name=pixdex\n"
            "X-KDE-PluginInfo-Version=1\nX-KDE-PluginInfo-License=MIT\nX-KDE-PluginInfo-EnabledByDefault=true\n"
            f"X-Plasma-API=DBus\nX-Plasma-DBusRunner-Service={BUS_NAME}\n"
            "X-Plasma-DBusRunner-Path=/org/pixdex/Search/KRunner\nX-Plasma-Runner-Min-Letter-Count=3\n"
            "X-Plasma-Request-Actions-Once=true\n")


def dolphin_menu(program: str) -> str:
    lines = [f"# {MARKER}", "[Desktop Entry]", "Type=Service", "Name=pixdex", f"MimeType={IMAGE_TYPES}",
             "Actions=" + ";".join(a.key for a in ACTIONS) + ";", "X-KDE-Submenu=pixdex", ""]
    for action in ACTIONS:
        lines += [f"[Desktop Action {action.key}]", f"Name={action.name}", f"Icon={action.icon}",
                  f"Exec={_command(program, *action.args)} %F", ""]
    return "\n".join(lines)


def nautilus_script(program: str, action: Action) -> str:
    """Nautilus runs a script with the selected files as its arguments (in the folder shown)."""
    return (f"#!/bin/sh\n# {MARKER}: {action.name}\n"
            f"exec {shlex.quote(program)} {' '.join(shlex.quote(a) for a in action.args)} -- \"$@\"\n")


def thunar_actions(program: str) -> str:
    blocks = []
    for action in ACTIONS:
        blocks.append(
            "<action>\n"
            f"\t<icon>{action.icon}</icon>\n\t<name>{action.name}</name>\n\t<submenu>pixdex</submenu>\n"
            f"\t<unique-id>pixdex-{action.key}</unique-id>\n"
            f"\t<command>{_xml(_command(program, *action.args))} %F</command>\n"
            f"\t<description>pixdex: {action.name.lower()}</description>\n"
            "\t<range>*</range>\n\t<patterns>*</patterns>\n\t<image-files/>\n"
            "</action>")
    return f"<!-- {MARKER}: begin -->\n" + "\n".join(blocks) + f"\n<!-- {MARKER}: end -->\n"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def targets(program: str, environ: Mapping[str, str]) -> list[Target]:
    data = data_home(environ)
    found = [
        Target(data / "dbus-1" / "services" / f"{BUS_NAME}.service", dbus_service(program), what="D-Bus activation"),
        Target(data / "applications" / f"{BUS_NAME}.desktop", app_entry(program), what="desktop entry"),
        Target(data / "krunner" / "dbusplugins" / f"{BUS_NAME}.desktop", krunner_entry(), what="KRunner"),
        Target(data / "kio" / "servicemenus" / "pixdex.desktop", dolphin_menu(program), 0o755, "Dolphin menu"),
        Target(data / "pixdex" / "integration" / f"{BUS_NAME}.search-provider.ini", gnome_ini(),
               what="GNOME Shell (copy to the system folder)"),
    ]
    found += [Target(data / "nautilus" / "scripts" / "pixdex" / action.name.replace("/", "∕"),
                     nautilus_script(program, action), 0o755, "Nautilus script") for action in ACTIONS]
    return found


def contrib_files() -> dict[str, tuple[str, int]]:
    """contrib/desktop/: every file for CONTRIB_PROGRAM, at its path below the data folder (the GNOME
    Shell file where the system folder wants it, Thunar's actions as the snippet merged into uca.xml)."""
    home = Path("/home/you/.local/share")
    files = {str(t.path.relative_to(home)): (t.text, t.mode) for t in targets(CONTRIB_PROGRAM, {"HOME": "/home/you"})}
    ini = files.pop(f"pixdex/integration/{BUS_NAME}.search-provider.ini")
    files[f"gnome-shell/search-providers/{BUS_NAME}.search-provider.ini"] = ini
    files["Thunar/uca.xml-actions"] = (thunar_actions(CONTRIB_PROGRAM), 0o644)
    return files


def thunar_file(environ: Mapping[str, str]) -> Path:
    return config_home(environ) / "Thunar" / "uca.xml"


# Install, remove, status --------------------------------------------------------------------------
def install(program: str, environ: Mapping[str, str]) -> list[Path]:
    if not (os.path.isabs(program) and os.access(program, os.X_OK)):
        raise IntegrationError(f"{program}: not an executable file; give the absolute path of the pixdex command")
    written = []
    for target in targets(program, environ):
        _check_ours(target.path)
        _write(target.path, target.text, target.mode)
        written.append(target.path)
    written.append(merge_thunar(thunar_file(environ), thunar_actions(program)))
    return written


def remove(environ: Mapping[str, str]) -> list[Path]:
    removed = []
    for target in targets("pixdex", environ):
        if target.path.is_file() and _is_ours(target.path):
            target.path.unlink()
            removed.append(target.path)
    with_us = thunar_file(environ)
    if with_us.is_file() and "<unique-id>pixdex-" in with_us.read_text(encoding="utf-8", errors="replace"):
        merge_thunar(with_us, "")
        removed.append(with_us)
    script_dir = data_home(environ) / "nautilus" / "scripts" / "pixdex"
    if script_dir.is_dir() and not any(script_dir.iterdir()):
        script_dir.rmdir()
    return removed


def status(program: str, environ: Mapping[str, str]) -> list[tuple[str, Path, str]]:
    """(what, where, state): "installed", "outdated" (another pixdex path or version), "missing", or
    "not ours" (a file pixdex did not write is in the way)."""
    rows = []
    for target in targets(program, environ):
        if not target.path.exists():
            state = "missing"
        elif not _is_ours(target.path):
            state = "not ours"
        else:
            state = "installed" if target.path.read_text(encoding="utf-8", errors="replace") == target.text \
                and (target.path.stat().st_mode & 0o777) == target.mode else "outdated"
        rows.append((target.what, target.path, state))
    uca = thunar_file(environ)
    text = uca.read_text(encoding="utf-8", errors="replace") if uca.is_file() else ""
    state = "missing" if "<unique-id>pixdex-" not in text else \
        "installed" if thunar_actions(program) in text else "outdated"
    rows.append(("Thunar actions", uca, state))
    return rows


def _is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return MARKER in handle.read(4096)
    except OSError:
        return False


def _check_ours(path: Path) -> None:
    if (path.exists() or path.is_symlink()) and not _is_ours(path):
        raise IntegrationError(f"{path}: a file pixdex did not write is there; move it away, then run "
                               "`pixdex integrate install` again")


def _write(path: Path, text: str, mode: int) -> None:
    """One of pixdex's own files: atomically, with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))
    os.chmod(path, mode)


ACTION_BLOCK = re.compile(r"[ \t]*<action>(?:(?!</action>).)*?<unique-id>pixdex-[^<]*</unique-id>.*?</action>[ \t]*\n?",
                          re.S)
MARKED = re.compile(rf"[ \t]*<!-- {MARKER}: (?:begin|end) -->[ \t]*\n?")
EMPTY_UCA = '<?xml version="1.0" encoding="UTF-8"?>\n<actions>\n</actions>\n'


def merge_thunar(path: Path, ours: str) -> Path:
    """Put `ours` (or nothing) in place of pixdex's actions in Thunar's uca.xml, byte for byte around them:
    the person's actions, comments and layout stay. A file that is not well-formed is left alone."""
    try:
        before = os.stat(owned_target(path))
    except FileNotFoundError:
        before = None
    original = path.read_text(encoding="utf-8") if before is not None else EMPTY_UCA
    try:
        ElementTree.fromstring(original.encode("utf-8"))
    except ElementTree.ParseError as exc:
        raise IntegrationError(f"{path}: not well-formed XML ({exc}); pixdex leaves it alone — fix it in Thunar "
                               "(Edit → Configure custom actions) or move it away") from None
    kept = MARKED.sub("", ACTION_BLOCK.sub("", original))
    end = kept.rfind("</actions>")
    if end < 0:
        raise IntegrationError(f"{path}: no <actions> element; pixdex leaves it alone")
    merged = kept[:end] + ours + kept[end:]
    parsed = ElementTree.fromstring(merged.encode("utf-8"))
    wanted = {a.key for a in ACTIONS} if ours else set()
    found = {u.text.removeprefix("pixdex-") for u in parsed.iter("unique-id")
             if u.text and u.text.startswith("pixdex-")}
    if found != wanted:  # the merge must leave exactly our actions, once
        raise IntegrationError(f"{path}: could not merge pixdex's actions cleanly; pixdex leaves it alone")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # the person's file: through a symlink, keeping its mode and owner, never over an edit made meanwhile
        replace_owned(path, merged.encode("utf-8"), seen(before))
    except Refused as exc:
        raise IntegrationError(f"{path}: not changed: {exc}") from None
    except ChangedMeanwhile:
        raise IntegrationError(f"{path}: Thunar changed it just now; run the command again") from None
    return path
