"""The yardstick of ``api_load.py``'s side-by-side phase: a bare FastAPI app whose one endpoint
computes the same formula as ``GET /api/v1/recommend`` with Step Law (lr* = 1.79 N^-0.713
D^0.307, B* = 0.58 D^0.571 tokens), with no database, no law lookup and no cache: what a
recommendation costs in FastAPI and uvicorn alone. Served like ``hpscale serve`` serves hpscale
(the same HTTP protocol class, no access log).

    python benchmarks/_bare_api.py PORT WORKERS
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from fastapi import FastAPI

app = FastAPI()


@app.get("/recommend")
async def recommend(n_params: float, tokens: float, seq_len: int = 2048) -> dict[str, float | int]:
    """Step Law's lr and batch for N parameters on D tokens."""
    lr = 1.79 * n_params**-0.713 * tokens**0.307
    batch_tokens = 0.58 * tokens**0.571
    return {"n_params": n_params, "tokens": tokens, "seq_len": seq_len, "lr": lr, "batch_tokens": batch_tokens,
            "batch_size": max(1, math.floor(batch_tokens / seq_len + 0.5))}


if __name__ == "__main__":
    import uvicorn

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _repo  # noqa: F401  (hpscale importable from a plain checkout)

    from hpscale.service.server import NoDelayHTTPProtocol

    port, workers = int(sys.argv[1]), int(sys.argv[2])
    uvicorn.run("_bare_api:app", host="127.0.0.1", port=port, workers=workers, access_log=False,
                log_level="warning", http=NoDelayHTTPProtocol, app_dir=str(Path(__file__).resolve().parent))
