"""What the commands print: search results (text, JSON or NUL-separated raw paths), an index run's summary,
`pixdex status`. Text that comes from file names is made printable here."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable
from typing import Any

from pixdex.daemon.commands.connect import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from pixdex.daemon.openpage import notify
from pixdex.indexer.errors import PixdexError


def summary_dict(report: Any, stats: Any) -> dict[str, Any]:
    return {
        "new": report.new, "changed": report.changed - stats.touched, "unchanged": report.unchanged + stats.touched,
        "moved": report.moved, "removed": report.removed, "failed": stats.failed + report.failed_before,
        "decoded": stats.decoded, "embedded": stats.embedded, "tagged": stats.tagged,
        "inference_calls": stats.inference_calls, "hashed": stats.hashed,
        "seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
        "sidecars_read": stats.sidecars_read, "from_sidecars": stats.from_sidecars,
        "resumed": report.resumed, "sidecar_failures": stats.sidecar_failures + len(report.sidecar_errors),
        "failures": stats.failures, "folder_errors": report.folder_errors,
        "sidecar_errors": report.sidecar_errors + stats.sidecar_errors,
    }


def summary_line(s: dict[str, Any]) -> str:
    line = (f"{s['new']} new, {s['changed']} changed, {s['unchanged']} unchanged, {s['moved']} moved, "
            f"{s['removed']} removed, {s['failed']} failed")
    if s["sidecars_read"]:
        line += f"; {s['sidecars_read']} edited sidecar(s) read again"
    if s["resumed"]:
        line += f"; {s['resumed']} resumed from an earlier run"
    if s["sidecar_failures"]:
        line += f"; {s['sidecar_failures']} sidecar(s) not written (see `pixdex failures`)"
    return line


def results_dict(results: Any, raw: bool) -> dict[str, Any]:
    data: dict[str, Any] = results.as_dict()
    if raw:
        for hit, out in zip(results.hits, data["hits"], strict=True):
            out["path_b64"] = base64.b64encode(hit.raw_path).decode()
    return data


def print_results(data: dict[str, Any], args: argparse.Namespace) -> int:
    hits = data["hits"]
    for note in data["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(dict(data.items()) | {"hits": [
            {k: v for k, v in h.items() if k != "path_b64"} for h in hits]}, indent=2, ensure_ascii=False))
    elif args.null:
        sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(base64.b64decode(h["path_b64"]) + b"\0" for h in hits))  # the exact bytes
        sys.stdout.buffer.flush()
    else:
        for n, hit in enumerate(hits, 1):
            parts = []
            if hit["vector_rank"] is not None:
                parts.append(f"vector #{hit['vector_rank']} {hit['vector_score']:.3f}")
            if hit["text_rank"] is not None:
                parts.append(f"text #{hit['text_rank']} {hit['text_score']:.2f}")
            shown = f"   [{', '.join(parts)}]" if parts else ""
            print(f"{n:3d}  {hit['score']:.5f}  {printable(hit['path'])}{shown}")
    if not hits:
        print("no results", file=sys.stderr)
    return EXIT_OK if hits else EXIT_SOME_FAILED


def printable(text: str) -> str:
    """A path for a terminal line: control characters (a newline in a name) escaped, one line per hit."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)

def print_status(info: dict[str, Any]) -> None:
    """`pixdex status` as text."""
    counts = info["counts"]
    sidecars = info.get("sidecar_failures", 0)
    unwritten = f"; {sidecars} sidecar(s) not written (read and indexed anyway; see `pixdex failures`)" \
        if sidecars else ""
    print(f"images: {counts['done']} indexed, {counts['pending']} pending, {counts['failed']} failed{unwritten}")
    print("queue: " + ", ".join(f"{n} {name}" for name, n in info["queue"].items()))
    for folder in info.get("unreadable_folders", []):
        print(f"unreadable folder: {printable(folder['path'])}: {folder['reason']} (what is below it is kept as it "
              "was; scanned again once it can be read)")
    for kind, model in info["models"].items():
        state = str(model["state"])
        print(f"{kind} model: {model['name']}: {state}" if model["name"] else
              f"{kind} model: {state if state != 'disabled' else 'off'} (models.{kind} in the config)")
        switch = model.get("reembedding")
        if switch:
            print(f"  re-embedding the library: searches use {switch['from']} until the last {switch['left']} "
                  f"image(s) have their {switch['to']} vector")
    _print_live(info)
    for name, size in info["sizes"].items():
        print(f"{name}: {size:,} bytes")
    for name, path in info["paths"].items():
        print(f"{name}: {path}")


def _print_live(info: dict[str, Any]) -> None:
    daemon = info.get("daemon")
    if daemon is None:
        other = info.get("other_daemon")
        if other:
            print(f"daemon: none for this data directory (the one on the socket, pid {other['pid']}, serves "
                  f"{other.get('data_dir')})")
        else:
            print("daemon: not running (`pixdex serve`, or `pixdex service install`)")
        return
    state = "paused" if daemon["paused"] else "running"
    print(f"daemon: {state}, pid {daemon['pid']}, up {daemon['uptime']:.0f} s, {daemon['mode']} mode; "
          f"socket {daemon['socket']}, tcp {daemon['tcp']}")
    _print_connections(info.get("connections") or {})
    if daemon["mode"] == "restarting":
        print(f"  the indexing process is starting again ({daemon['missing']}); searches go on")
    if daemon["mode"] == "reduced":
        print(f"  missing models: {daemon['missing']}")
        pull = daemon.get("models_pull") or {}
        if pull.get("state") == "pulling":
            print(f"  pulling {', '.join(pull['models'])} from the Hugging Face hub in the background"
                  + _pull_progress(pull.get("progress")))
        elif pull.get("state") == "failed":
            print(f"  the background pull failed (tried again every 10 min): {pull['error']}")
        print(f"  fix: {daemon['fix']}")
        print(f"  {info['waiting_for_models']} image(s) indexed by name and metadata only, waiting for models")
    describe = info.get("describe") or {}
    if describe.get("enabled"):
        why = f": {describe['why']}" if describe.get("why") else ""
        print(f"descriptions ({describe['model']} at {describe['host']}): {describe['state']}{why}; "
              f"{describe.get('described', 0)} described, {describe.get('pending', 0)} pending, "
              f"{describe.get('failed', 0)} failed")
    ocr = info.get("ocr") or {}
    if "pending" in ocr:
        cost = f", {ocr['cpu_ms_per_image']:g} ms CPU per image" if ocr.get("cpu_ms_per_image") else ""
        print(f"text in images (OCR): {ocr.get('state', 'not running')}; {ocr.get('read', 0)} read "
              f"({ocr.get('with_text', 0)} with text), {ocr.get('pending', 0)} pending, {ocr.get('failed', 0)} failed"
              f"{cost}")
    progress = info["progress"]
    eta = f", about {progress['eta_seconds']} s left" if progress["eta_seconds"] is not None else ""
    print(f"progress: {progress['rate']} files/s{eta}; {progress['committed']} committed, "
          f"{progress['failed']} failed since start")
    for stage, path in progress["current"].items():
        print(f"  {stage}: {printable(path)}")
    if progress["scanning"]:
        print(f"  scanning: {progress['scanning']}")
    models = info["loaded_models"]
    loaded = ", ".join(models["indexing"] + models["query"]) or "none (unloaded when idle)"
    memory = ", ".join(f"{name} {rss / 2**20:.0f} MiB" for name, rss in models["rss"].items())
    providers = ", ".join(models.get("providers") or []) or "not loaded yet"
    print(f"loaded models: {loaded}; memory: {memory}; running on: {providers}")
    held = info.get("memory")
    if held:
        each = ", ".join(f"{name} {pss / 2**20:.0f}" for name, pss in held["pss"].items())
        print(f"memory (PSS): {held['total_pss'] / 2**20:.0f} MiB in {len(held['pss'])} processes ({each})"
              + ("; idle" if held["idle"] else ""))
    for root in info["watch"]:
        print(f"watch: {printable(root['path'])}: {root['mode']} ({root['why']})")


def _print_connections(listeners: dict[str, dict[str, Any]]) -> None:
    """Open connections per listener against its cap, and what the caps did (closed idle ones, refused)."""
    if not listeners:
        return
    parts = [f"{name} {c['open']} of {c['limit']}" + (f" ({c['busy']} busy)" if c["busy"] else "")
             for name, c in listeners.items()]
    closed, refused = (sum(c[key] for c in listeners.values()) for key in ("closed_idle", "refused"))
    extra = f"; since start {closed:,} idle closed to make room, {refused:,} refused" if closed or refused else ""
    print(f"connections: {', '.join(parts)}{extra}")


def _pull_progress(progress: dict[str, Any] | None) -> str:
    if not progress or not progress.get("total"):
        return ""
    done, total = progress["done"], progress["total"]
    if progress.get("unit") == "B":
        return f": {progress['model']} {done / 2**20:,.1f} of {total / 2**20:,.1f} MB ({100 * done // total}%)"
    return f": {progress['model']} {done} of {total} files"


def notifying(run: Callable[[], int]) -> int:
    """Run a command a file manager started: its outcome, or its error, as a desktop notification."""
    try:
        return run()
    except PixdexError as exc:
        notify(str(exc))
        return EXIT_USAGE
