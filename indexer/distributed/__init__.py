"""Beyond one machine: `pixdex index --ray` runs decode → models → sidecar write as a Ray Data job on a cluster
(`job`), with pixdex's own stage code in each step (`tasks`, `actor`), the models shipped through Ray's object store
(`bundle`), and the cluster's nodes, defaults and shared-storage check in `cluster`. The sidecars are the unit of
exchange: the local catalog, a daemon or `pixdex rebuild` on any node takes them up with no model call.

Needs the `ray` extra; only the CLI's `--ray` path imports this package.
"""
