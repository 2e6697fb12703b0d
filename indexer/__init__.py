"""pixdex.indexer.

Nothing leaves the machine: ONNX Runtime (1.2x and later) collects usage events for Microsoft as soon as it
is imported, unless ORT_DISABLE_TELEMETRY is set before that import (`disable_telemetry_events()` afterwards
is too late). Every pixdex process imports this package before `indexer.session`, the one importer of
onnxruntime, so it is set here; so is huggingface_hub's (a pull talks to the hub, and only for the files).

OpenBLAS (numpy's) starts a thread per core at import, a thread that does not block SIGINT: while a
worker pool starts (`workers.make_pool`, SIGINT ignored for the children's sake) it could take a Ctrl-C
and drop it. pixdex's matrix products are small (a query against the vocabulary, the vector delta), so
one BLAS thread serves, and the threads pixdex starts itself come after the pools.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
