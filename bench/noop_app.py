"""The engine's floor: a FastAPI ingress on Ray Serve that does no work of its own.

Same HTTP shape as the digits application (``POST /v1/predict`` with an image body,
``POST /v1/predict/batch`` with a JSON body), same deployment options, and a fixed JSON
answer of the digits answer's size. What it costs per request is what Ray Serve (proxy,
router, replica, FastAPI) costs on this machine; the serving benchmark measures the
digits application against it, in the same run and with the same client.
"""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from serving.config import ServeConfig

#: A digits answer's shape with fixed values (11 probabilities: the default model's classes).
ANSWER = {"label": 7, "confidence": 0.998, "probabilities": [0.0002] * 11,
          "model_version": "noop-000000000000"}

api = FastAPI(title="no-op")


@serve.deployment
@serve.ingress(api)
class NoOp:
    """Reads the body (the proxy must carry it either way) and answers a constant."""

    @api.post("/v1/predict")
    async def predict(self, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(ANSWER)

    @api.post("/v1/predict/batch")
    async def predict_batch(self, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"results": [ANSWER] * 32, "model_version": ANSWER["model_version"]})


def build(cfg: ServeConfig) -> serve.Application:
    """The no-op application with the digits deployment's own options (concurrency
    limits, queue, CPUs), so only the work done per request differs."""
    opts = cfg.deployment_options()
    opts.pop("user_config")
    opts["name"] = "NoOp"
    return NoOp.options(**opts).bind()
