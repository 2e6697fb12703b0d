"""The `pixdex` commands, one module per family (`daemon/cli.py` builds the parser from them).

The command line's client path stays light — a desktop search box may run `pixdex search` per keystroke,
and through a daemon it loads no numpy, onnxruntime, usearch, tantivy, Pillow, pyexiv2 or aiohttp (a test
in tests/test_imports.py says so). So these modules import at the top only what that path needs; the
indexing core, the query side, the exporter, the hub client and the daemon's own modules are imported
inside the commands that use them, each marked `late`.
"""
