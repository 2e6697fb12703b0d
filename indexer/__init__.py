"""pixdex.indexer.

Nothing leaves the machine: ONNX Runtime (1.2x and later) collects usage events for Microsoft as soon as it
is imported, unless ORT_DISABLE_TELEMETRY is set before that import (`disable_telemetry_events()` afterwards
is too late). Every pixdex process imports this package before `indexer.session`, the one importer of
onnxruntime, so it is set here; so is huggingface_hub's (a pull talks to the hub, and only for the files).
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
