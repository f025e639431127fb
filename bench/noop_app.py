"""The engine's floor: a FastAPI ingress on Ray Serve that does no work of its own.

Same HTTP shape as the digits application (``POST /v1/predict`` and ``/v1/read`` with an
image body, ``POST /v1/predict/batch`` and ``/v1/read/batch`` with a JSON body, ``GET /v1/health`` and
``/v1/model``), same deployment options, and fixed JSON answers of the digits answers'
sizes. What it costs per request is what Ray Serve (proxy,
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

FIELD = {"text": "18014", "raw": "18.014", "confidences": [0.99] * 5, "confidence": 0.95,
         "boxes": [[0, 0, 10, 20]] * 5, "model_version": ANSWER["model_version"]}
HEALTH = {"status": "ok", "model_version": ANSWER["model_version"], "deployment": "HEALTHY",
          "replicas": {"RUNNING": 1}}
MODEL = {"name": "noop", "version": ANSWER["model_version"], "accuracy": 0.99, "epochs": 1,
         "checkpoint": "noop", "code_version": "0"}

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

    @api.post("/v1/read/batch")
    async def read_batch(self, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"results": [FIELD] * 32, "model_version": ANSWER["model_version"]})

    @api.post("/v1/read")
    async def read(self, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(FIELD)

    @api.get("/v1/health")
    async def health(self) -> JSONResponse:
        return JSONResponse(HEALTH)

    @api.get("/v1/model")
    async def model(self) -> JSONResponse:
        return JSONResponse(MODEL)


def build(cfg: ServeConfig) -> serve.Application:
    """The no-op application with the digits deployment's own options (concurrency
    limits, queue, CPUs), so only the work done per request differs."""
    opts = cfg.deployment_options()
    opts.pop("user_config")
    opts["name"] = "NoOp"
    return NoOp.options(**opts).bind()
