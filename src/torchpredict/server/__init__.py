"""Serving over HTTP: `torchpredict serve` and `torchpredict.serve(...)`, the Open Inference Protocol V2 (the REST
API of KServe and Triton) and a records endpoint, with dynamic batching.

batcher.py joins concurrent requests into model batches (no HTTP); oip.py and records.py are the codecs of the
two APIs (no HTTP, no model); app.py is the raw ASGI app (`create_app`, to run or mount); metrics.py the
Prometheus metrics; run.py runs the app on uvicorn (`serve`). Importing this package imports none of them:
`from torchpredict.server import create_app, serve` imports on first use, and only serving needs the `server`
extra (`pip install 'torchpredict[server]'`).
"""

from torchpredict.lazy import exports

__all__ = ["create_app", "serve"]
__getattr__ = exports(__name__, {"create_app": "torchpredict.server.app", "serve": "torchpredict.server.run"})
