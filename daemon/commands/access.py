"""The commands that reach the library from elsewhere: `pixdex token` (bearer tokens for loopback TCP), `open`
(the web page), `service` (the systemd user units), `dbus` (the desktop search providers) and `integrate`
(desktop search and file-manager actions)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pixdex.daemon import integrate, units
from pixdex.daemon.commands.connect import EXIT_OK, daemon_client
from pixdex.daemon.commands.output import notifying, printable
from pixdex.daemon.openpage import open_page
from pixdex.daemon.tokens import Tokens
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import as_text
from pixdex.indexer.settings import Config


def add_parsers(sub: Any) -> None:
    page = sub.add_parser("open", help="open the web page in a browser (a one-time login link)")
    page.add_argument("words", nargs="*", metavar="QUERY|IMAGE", help="a query; with --similar, image files")
    page.add_argument("--similar", action="store_true", help="show images like the given ones")
    page.add_argument("--narrow", action="store_true", help=argparse.SUPPRESS)  # "Search images like these"
    page.add_argument("--print-url", action="store_true", help="print the link instead of opening it")
    page.add_argument("--lan", action="store_true", help="a link (and QR code) for a phone on the network (server.lan)")
    page.add_argument("--only", default=None, metavar="NAME[,NAME]", help="with --lan: show only these collections")
    page.add_argument("--notify", action="store_true", help="also show problems as a desktop notification")
    dbus = sub.add_parser("dbus", help="serve the GNOME Shell and KRunner search providers on the session bus")
    integrate = sub.add_parser("integrate", help="install or remove the desktop search providers and "
                                                 "file-manager actions for this user")
    isub = integrate.add_subparsers(dest="integrate_command", required=True, metavar="ACTION")
    isub.add_parser("install", help="GNOME/KDE search, Nautilus/Dolphin/Thunar actions, the desktop entry")
    isub.add_parser("remove", help="remove what install wrote (and only that)")
    isub.add_parser("status", help="what is installed, and what is out of date")
    token = sub.add_parser("token", help="the bearer token for the loopback TCP listener")
    token.add_argument("--new", action="store_true", help="make another token")
    token.add_argument("--only", default=None, metavar="NAME[,NAME]",
                       help="with --new: limit it to these collections")
    token.add_argument("--label", default="", help="with --new: a note saying who holds it")
    token.add_argument("--list", action="store_true", help="every token: its id, what it sees, its label")
    token.add_argument("--json", action="store_true", help="with --list: print JSON")
    token.add_argument("--revoke", metavar="ID|LABEL",
                       help="end a token (and the web page sessions logged in with it) at once")
    service = sub.add_parser("service", help="install or remove the systemd user units")
    ssub = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    ssub.add_parser("install", help="write pixdex.service and pixdex.socket to ~/.config/systemd/user/")
    ssub.add_parser("uninstall", help="remove them")
    ssub.add_parser("status", help="whether they are installed and running")
    page.set_defaults(handler=cmd_open)
    dbus.set_defaults(handler=cmd_dbus)
    integrate.set_defaults(handler=cmd_integrate)
    token.set_defaults(handler=cmd_token)
    service.set_defaults(handler=cmd_service)


def cmd_token(args: argparse.Namespace, config: Config) -> int:
    tokens = Tokens(config.state_dir / "tokens.json")
    chosen = [name for name, on in (("--new", args.new), ("--list", args.list), ("--revoke", args.revoke)) if on]
    if len(chosen) > 1:
        raise PixdexError(f"{' and '.join(chosen)} do not go together; give one")
    if (args.only or args.label) and not args.new:
        raise PixdexError("--only and --label need --new: `pixdex token --new --only NAME --label phone`")
    if args.json and not args.list:
        raise PixdexError("--json needs --list")
    if args.new:
        if len(args.label) > 100 or not args.label.isprintable() or as_text(args.label) != args.label:
            raise PixdexError("--label must be printable text of at most 100 characters (no control characters)")
        only = _collection_names(config, args.only) if args.only is not None else None
        token = tokens.add(only, args.label)
        print(token.secret)
        print(f"id {token.id}" + (f", limited to: {', '.join(only)}" if only else ", sees everything")
              + f"; `pixdex token --revoke {token.id}` ends it", file=sys.stderr)
        return EXIT_OK
    if args.list:
        listed = [t.listing() for t in tokens.load()]
        if args.json:
            print(json.dumps(listed, indent=2, ensure_ascii=False))
        else:
            for row in listed:
                scope = ", ".join(row["collections"]) if row["collections"] is not None else "everything"
                print(f"{row['id']}  {printable(scope):<24} {printable(str(row['label']))}")
        return EXIT_OK
    if args.revoke is not None:
        gone = tokens.revoke(args.revoke)
        print(f"revoked {gone.id}" + (f" ({gone.label})" if gone.label else "")
              + ": it and the web page sessions logged in with it stop working now")
        return EXIT_OK
    found = [t for t in tokens.load(create=True) if t.collections is None]
    if not found:  # every full-access token was revoked: `pixdex token` makes the next
        found = [tokens.add(None, f"full access (made {time.strftime('%Y-%m-%d %H:%M')})")]
    print(found[0].secret)
    print(f"token {found[0].id} ({found[0].label or 'full access'}): use it as `Authorization: Bearer <token>` on "
          f"http://127.0.0.1:{config.server.port}/ ({tokens.path}, {len(tokens.load())} token(s); "
          "`pixdex token --list` shows them)", file=sys.stderr)
    return EXIT_OK


def _collection_names(config: Config, given: str) -> tuple[str, ...]:
    """The collections `--only` names, spelled as they are; an unknown name is refused, naming those there are."""
    from pixdex.daemon import offline as library

    client = daemon_client(config)
    rows = client.get("/watches") if client is not None else library.offline_watches(config)
    known = {str(r["name"]).lower(): str(r["name"]) for r in rows}
    wanted = [n.strip() for n in given.split(",") if n.strip()]
    if not wanted:
        raise PixdexError("--only needs collection names: `pixdex token --new --only NAME[,NAME]`")
    unknown = [n for n in wanted if n.lower() not in known]
    if unknown:
        raise PixdexError(f"--only: no collection is named {', '.join(map(repr, unknown))}; there are: "
                          f"{', '.join(sorted(known.values())) or 'none'} (`pixdex watch list`)")
    return tuple(dict.fromkeys(known[n.lower()] for n in wanted))


def cmd_open(args: argparse.Namespace, config: Config) -> int:
    def run() -> int:
        args.words = [as_text(w) for w in args.words]
        only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
        url = open_page(config, args.words, args.similar, args.narrow, args.lan, only, args.print_url)
        if args.lan:
            from pixdex.daemon.webpage import qr_terminal

            print(qr_terminal(url))
            print(f"scan it with the phone (it works once, within 10 minutes): {url}")
        elif args.print_url:
            print(url)
        else:
            print(f"opened the web page (the login link works once): {url}", file=sys.stderr)
        return EXIT_OK

    return notifying(run) if args.notify else run()


def cmd_service(args: argparse.Namespace, config: Config) -> int:
    directory = units.unit_dir(config.environ)
    if args.service_command == "install":
        written = units.install(directory, units.default_exec_start(), args.config)
        for path in written:
            print(f"wrote {path}")
        action = "install"
    elif args.service_command == "uninstall":
        commands = units.next_commands("uninstall", unit_dir=directory)
        print("if they run, stop and disable them first:\n  " + " ".join(commands[0]))
        for path in units.uninstall(directory):
            print(f"removed {path}")
        print("then run:\n  " + "\n  ".join(" ".join(c) for c in commands[1:]))
        return EXIT_OK
    else:
        for name in ("pixdex.service", "pixdex.socket"):
            path = directory / name
            print(f"{name}: {'installed at ' + str(path) if path.exists() else 'not installed'}")
        client = daemon_client(config)
        print("daemon: " + ("answering on " + str(config.socket_path) if client else "not running"))
        return EXIT_OK
    print("then run:")
    for command in units.next_commands(action, unit_dir=directory):  # type: ignore[arg-type]
        print("  " + " ".join(command))
    return EXIT_OK


def cmd_dbus(args: argparse.Namespace, config: Config) -> int:
    try:
        from pixdex.daemon import dbus
    except ImportError as exc:
        raise PixdexError(f"the search providers need the desktop extra (.venv/bin/pip install '.[desktop]' in the "
                          f"pixdex checkout): {exc}") from None
    return dbus.run(config)


def cmd_integrate(args: argparse.Namespace, config: Config) -> int:
    program = str(units.default_exec_start()[0])
    if args.integrate_command == "install":
        for path in integrate.install(program, config.environ):
            print(f"wrote {path}")
        integration = integrate.data_home(config.environ) / "pixdex" / "integration"
        ini = integration / f"{integrate.BUS_NAME}.search-provider.ini"
        print("GNOME Shell reads search providers only from the system folders; to add pixdex to its search, run\n"
              f"  sudo install -D -m 644 {ini} {integrate.GNOME_INI_DIR}/{ini.name}\n"
              "and log out and in again. KRunner, Dolphin, Nautilus and Thunar pick their files up by themselves "
              "(KRunner after `kquitapp6 krunner`, Nautilus and Thunar after a restart of the file manager).")
        try:
            import dbus_fast  # noqa: F401
        except ImportError:
            print("note: the search providers need the desktop extra: .venv/bin/pip install '.[desktop]'")
    elif args.integrate_command == "remove":
        for path in integrate.remove(config.environ):
            print(f"removed {path}" if not path.name.endswith(".xml") else f"removed pixdex's actions from {path}")
        system = Path(integrate.GNOME_INI_DIR) / f"{integrate.BUS_NAME}.search-provider.ini"
        if system.exists():
            print(f"the system copy for GNOME Shell needs root: sudo rm {system}")
    else:
        for what, path, state in integrate.status(program, config.environ):
            print(f"{what}: {state}: {path}")
        system = Path(integrate.GNOME_INI_DIR) / f"{integrate.BUS_NAME}.search-provider.ini"
        shown = system.exists() or Path("/usr/share/gnome-shell/search-providers", system.name).exists()
        print(f"GNOME Shell (system folder): {'installed' if shown else 'missing'}: {system}")
    return EXIT_OK
