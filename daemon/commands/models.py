"""`pixdex models list | info | pull | remove | standin | export`: the models pixdex knows, installs and
checks, in `<model_dir>`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pixdex.daemon.commands.connect import EXIT_OK, EXIT_USAGE
from pixdex.indexer.errors import CatalogError, ModelError, PixdexError
from pixdex.indexer.settings import Config, default_config_path


def add_parsers(sub: Any) -> None:
    models = sub.add_parser("models", help="list, pull, remove, export models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    mlist = msub.add_parser("list", help="the models pixdex knows and those installed: size, licence, in use")
    mlist.add_argument("--json", action="store_true", help="print JSON")
    pull = msub.add_parser("pull", help="download a known model from the Hugging Face hub (HF_ENDPOINT, "
                                        "HF_HUB_OFFLINE honoured)")
    pull.add_argument("name", help="a name from `pixdex models list`")
    pull.add_argument("--revision", help="a branch, tag or commit of the hub repo (default: the one pixdex knows)")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    pull.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
    info = msub.add_parser("info", help="what a model is, where it came from, its files")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print JSON")
    remove = msub.add_parser("remove", help="delete an installed model (not one the config uses, unless --force)")
    remove.add_argument("name")
    remove.add_argument("--force", action="store_true", help="remove it even when the config names it")
    standin = msub.add_parser("standin", help="write small stand-in models (meaningless results; for trying and "
                                              "testing)")
    standin.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
    standin.add_argument("--multilingual", action="store_true",
                         help="also a stand-in of the multilingual CLIP (XLM-RoBERTa text tower; needs transformers)")
    export = msub.add_parser("export", help="export an open_clip model to ONNX (needs the export extra and its "
                                            "weights)")
    export.add_argument("name", help="open_clip model name, e.g. ViT-B-32")
    export.add_argument("weights", nargs="?", metavar="PRETRAINED", help="open_clip pretrained tag, e.g. openai")
    export.add_argument("--pretrained", help="the same, as an option")
    export.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
    models.set_defaults(handler=cmd_models)
    for parser, run in ((mlist, _models_list), (pull, _models_pull), (info, _models_info), (remove, _models_remove),
                        (standin, _models_write), (export, _models_write)):
        parser.set_defaults(models_handler=run)


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    model_dir = getattr(args, "dir", None) or config.model_dir
    return int(args.models_handler(args, config, model_dir))  # ModelError: one line, exit 2


def _models_write(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    """`standin` and `export`: model files written by pixdex's own exporter."""
    try:
        return _export_models(args, model_dir, config.source or default_config_path(os.environ))
    except ImportError as exc:  # torch and open_clip come with the export extra only
        print("pixdex: error: model export needs the export extra (.venv/bin/pip install '.[export]' in the pixdex "
              "checkout; for a CPU-only torch install it first from https://download.pytorch.org/whl/cpu): "
              f"{exc}", file=sys.stderr)
        return EXIT_USAGE


def _in_use(config: Config) -> dict[tuple[str, str], str]:
    used = {("clip", config.models.clip): "[models] clip"}
    if config.models.tagger:
        used[("tagger", config.models.tagger)] = "[models] tagger"
    live = _live_model(config)
    if live is not None:
        used.setdefault(("clip", live.rsplit("@", 1)[0]), "live vectors")  # searched until the new model's are done
    return used


def _live_model(config: Config) -> str | None:
    from pixdex.indexer.catalog import Catalog

    if not config.layout.exists():
        return None
    try:
        catalog = Catalog(config.layout.catalog, read_only=True)
    except CatalogError:
        return None
    try:
        return catalog.live_model()
    finally:
        catalog.close()


def _model_rows(config: Config, model_dir: Path) -> list[dict[str, Any]]:
    from pixdex.indexer import (
        hub,  # late: the hub client and the exporter's onnxruntime load only for `models`
    )

    used = _in_use(config)
    rows = []
    local = set(hub.local_models(model_dir))
    for model in hub.KNOWN:
        key = (model.kind, model.name)
        directory = hub.folder(model_dir, model)
        state = hub.installed(model_dir, model.kind, model.name)
        rows.append({"name": model.name, "kind": model.kind, "installed": state,
                     "size_mb": round(hub.disk_size(directory) / 2**20) if state != "no" else model.download_mb,
                     "licence": model.licence, "in_use": used.get(key, ""), "source": model.repo,
                     "languages": model.languages})
        local.discard(key)
    for kind, name in sorted(local):  # exports, stand-ins, copies
        directory = model_dir / kind / name
        source = hub.manifest(directory).get("repo") or ("stand-in" if name.startswith("pixdex-standin") else "local")
        rows.append({"name": name, "kind": kind, "installed": hub.installed(model_dir, kind, name),
                     "size_mb": round(hub.disk_size(directory) / 2**20), "licence": "",
                     "in_use": used.get((kind, name), ""), "source": source, "languages": ""})
    for (kind, name), where in used.items():
        if not any(r["kind"] == kind and r["name"] == name for r in rows):
            rows.append({"name": name, "kind": kind, "installed": "no", "size_mb": None, "licence": "",
                         "in_use": where, "source": "unknown to pixdex", "languages": ""})
    return rows


def _models_list(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    rows = _model_rows(config, model_dir)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return EXIT_OK
    print(f"model directory: {model_dir}")
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  KIND    INSTALLED  SIZE      IN USE          LICENCE")
    for r in rows:
        size = "?" if r["size_mb"] is None else f"{r['size_mb']:,} MB" + ("" if r["installed"] != "no" else " ↓")
        print(f"{r['name']:<{width}}  {r['kind']:<6}  {r['installed']:<9}  {size:<8}  {r['in_use'] or '-':<14}  "
              f"{r['licence'] or r['source']}")
    missing = [r for r in rows if r["in_use"] and r["installed"] != "yes"]
    for r in missing:
        print(f"\n{r['in_use']} = \"{r['name']}\" is not installed: `pixdex models pull {r['name']}`"
              if r["source"] != "unknown to pixdex" else
              f"\n{r['in_use']} = \"{r['name']}\" is neither installed nor known; put its files in "
              f"{model_dir / r['kind'] / r['name']}")
    print("\n(↓ = download size)")
    return EXIT_OK


def _models_info(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    from pixdex.indexer import (
        hub,  # late: the hub client and the exporter's onnxruntime load only for `models`
    )

    local = {name.lower(): (kind, name) for kind, name in hub.local_models(model_dir)}
    try:
        model = hub.known(args.name)
        kind, name, info = model.kind, model.name, hub.describe(model)
    except ModelError:
        if args.name.lower() not in local:
            raise
        kind, name = local[args.name.lower()]
        info = {"name": name, "kind": kind}
    directory = model_dir / kind / name
    info |= {"directory": str(directory), "installed": hub.installed(model_dir, kind, name),
             "size_bytes": hub.disk_size(directory), "in_use": _in_use(config).get((kind, name), ""),
             "pulled": hub.manifest(directory)}
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return EXIT_OK
    for key in ("name", "kind", "repo", "revision", "licence", "languages", "about", "download_mb", "directory",
                "installed", "size_bytes", "in_use"):
        if key in info:
            print(f"{key}: {info[key] if info[key] != '' else '-'}")
    pulled = info["pulled"]
    if pulled:
        print(f"pulled: {pulled.get('pulled')} from {pulled.get('endpoint')} at commit {pulled.get('commit')}")
        for f in pulled.get("files", []):
            print(f"  {f['path']}  {f['size']:,} bytes  sha256 {f['sha256']}")
    return EXIT_OK


def _models_pull(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    from pixdex.indexer import (
        hub,  # late: the hub client and the exporter's onnxruntime load only for `models`
    )

    model = hub.known(args.name)
    print(f"pulling {model.name} ({model.kind}, {model.licence}, about {model.download_mb:,} MB) from {model.repo}",
          file=sys.stderr)
    path = hub.pull(model, model_dir, args.revision, progress=not args.quiet)
    print(f"installed {path}")
    key = "clip" if model.kind == "clip" else "tagger"
    if getattr(config.models, key) != model.name:
        print(f"to use it, set [models] {key} = \"{model.name}\" in {config.source or default_config_path(os.environ)}"
              " (a running daemon takes it with `pixdex reload`; a new CLIP model re-embeds in the background)",
              file=sys.stderr)
    return EXIT_OK


def _models_remove(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    from pixdex.indexer import (
        hub,  # late: the hub client and the exporter's onnxruntime load only for `models`
    )

    local = {name.lower(): (kind, name) for kind, name in hub.local_models(model_dir)}
    if args.name.lower() not in local:
        raise ModelError(f"{args.name}: not installed in {model_dir} (`pixdex models list`)")
    kind, name = local[args.name.lower()]
    where = _in_use(config).get((kind, name))
    if where and not args.force:
        if where == "live vectors":
            raise ModelError(f"{name}: searches still use its vectors while the library is re-embedded with "
                             f"{config.models.clip} (`pixdex status` shows how far); remove it after that, or "
                             "--force (likeness search then covers only the images re-embedded so far)")
        raise ModelError(f"{name}: the config uses it ({where}); set another model first, or --force (pixdex then "
                         "runs in reduced mode until a model is there)")
    freed = hub.remove(model_dir, kind, name)
    print(f"removed {model_dir / kind / name} ({freed / 2**20:,.0f} MB freed; the hub cache keeps its own copy: "
          "`hf cache ls` / `hf cache rm`)")
    return EXIT_OK


def _export_models(args: argparse.Namespace, model_dir: Path, config_file: Path) -> int:
    from pixdex.indexer import (
        export,  # late: the hub client and the exporter's onnxruntime load only for `models`
    )

    if args.models_command == "export":
        pretrained = args.weights or args.pretrained
        if not pretrained:
            raise PixdexError("models export needs the pretrained tag: `pixdex models export ViT-B-32 openai` "
                              "(`python -c 'import open_clip; print(open_clip.list_pretrained())'` lists them)")
        path, parity = export.export_pretrained_clip(args.name, pretrained, model_dir)
        print(f"exported {path}; parity with open_clip: cosine ≥ {parity['image_cosine_min']:.6f} over "
              f"{parity['images']} images, ≥ {parity['text_cosine_min']:.6f} over {parity['texts']} texts")
        print(f"to use it, set [models] clip = \"{path.name}\" in {config_file}", file=sys.stderr)
        return EXIT_OK
    clip = export.write_standin_clip(model_dir)
    tagger = export.write_standin_tagger(model_dir)
    print(f"wrote {clip}\nwrote {tagger}")
    if args.multilingual:
        print(f"wrote {export.write_standin_multilingual_clip(model_dir)} (for [models] clip: queries in German, "
              "Korean… take the same path as with the real multilingual model)")
    print("WARNING: these are STAND-IN models with random weights. They exercise every code path, but their "
          "tags and rankings are meaningless. To use them, put this in your config:\n"
          f"[models]\nclip = \"{clip.name}\"\ntagger = \"{tagger.name}\"\n"
          f"(config file: {config_file}; a running daemon takes it with "
          "`pixdex reload`)",
          file=sys.stderr)
    return EXIT_OK
