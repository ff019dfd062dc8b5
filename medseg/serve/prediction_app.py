"""The HTTP app behind ``medseg serve``: jobs that predict an uploaded image or a file/folder under the allowed
roots with the served models (no model logic here; ``served_models`` runs them, ``jobs`` queues and records them).

    POST /v1/jobs                 multipart (field "file", optional "model") or JSON {"path", "model"?}:
                                  202 with the job; 429 when the queue is full (Retry-After)
    GET  /v1/jobs/{id}[?wait=S]   status queued|running|done|failed, stage, progress, attempts, timings, error
                                  (with wait: once the job ended, or after S <= 30 seconds)
    GET  /v1/jobs/{id}/result     the label file, in the input's format (409 until the job is done)
    GET  /v1/models               each model's task, configuration, labels and WeightsCard
    GET  /healthz                 alive (no token)        GET /readyz   models loaded and workers up (no token)

Every other request needs a bearer token (``auth.TokenAuth``: 401, and 429 + Retry-After over the token's rate);
a job's status and result are answered only to the token that submitted it.
Upload bodies are limited while they stream (``guard.BodyLimit``: 413, nothing kept); paths are confined to the
allowed roots before anything is read (``roots.confine``: 403/422); images are refused from their header over
``max_image_voxels`` (413). User errors are 422 (a bad file, model or path; a DICOMweb reference, which this server is not configured
for), 404 (unknown job).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional, Sequence

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile

from medseg.errors import MedsegError
from medseg.io import image_suffix
from medseg.serve.auth import RateLimiter, TokenAuth, TokenSet
from medseg.serve.guard import BodyLimit, BodyTooLarge
from medseg.serve.jobs import Job, JobQueue, JobStore, QueueFull
from medseg.serve.limits import DEFAULT_MAX_IMAGE_VOXELS, ImageReader, ImageTooLarge
from medseg.serve.roots import PathRefused, confine
from medseg.serve.served_models import PredictionRunner, ServedModel, result_suffix

UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".mha")
DEFAULT_MAX_UPLOAD_BYTES = 1024 * 2**20
OPEN_PATHS = ("/healthz", "/readyz")
MAX_WAIT_SECONDS = 30.0


class DicomwebReference(BaseModel):
    url: str = Field(..., max_length=2000)
    study: str = Field(..., max_length=64)
    series: Optional[str] = Field(None, max_length=64)


class JobRequest(BaseModel):
    """A job by path (a file or a DICOM series folder under an allowed root) or by DICOMweb reference."""

    path: Optional[str] = Field(None, max_length=4096)
    model: Optional[str] = Field(None, max_length=255)
    dicomweb: Optional[DicomwebReference] = None


class JobInfo(BaseModel):
    id: str
    model: str
    status: str = Field(..., description="queued, running, done or failed")
    stage: str
    progress: float
    attempts: int
    error: Optional[str]
    input_name: str
    created: float
    started: Optional[float]
    finished: Optional[float]
    timings: dict[str, float]


class ModelInfo(BaseModel):
    name: str
    task: str
    configuration: Optional[str]
    spatial_dims: int
    in_channels: Optional[int]
    folds: list[str]
    labels: list[dict]
    card: dict


class Health(BaseModel):
    status: str
    models: int = 0
    workers: int = 0
    queued: int = 0
    running: int = 0


_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": f"an image ({', '.join(UPLOAD_SUFFIXES)})"},
        "model": {"type": "string", "description": "a served model's name (needed when several are served)"}}}},
    "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}}}}
_ERRORS = {status: {"description": text} for status, text in (
    (401, "missing or wrong token"), (403, "path outside the allowed roots"), (413, "upload or image too large"),
    (422, "not an image, an unknown model, a bad path, DICOMweb not configured"),
    (429, "queue full or rate limit (Retry-After)"))}


def create_app(models: dict[str, ServedModel], *, tokens: TokenSet, state: Path,
               allowed_roots: Sequence[Path] = (), workers: int = 1, max_queued: int = 16,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_image_voxels: int = DEFAULT_MAX_IMAGE_VOXELS,
               limiter: RateLimiter | None = None) -> FastAPI:
    """The service for ``models`` (loaded already), keeping jobs, uploads and results under ``state``.

    The workers start (and interrupted jobs of an earlier server are recovered) when the app starts up
    (its lifespan); until then jobs are accepted and wait. ``limiter``: the per-token rate limiter (its clock).
    """
    state = Path(state)
    uploads, results = state / "uploads", state / "results"
    for folder in (uploads, results):
        folder.mkdir(parents=True, exist_ok=True)
    roots = [Path(root).resolve() for root in allowed_roots]
    reader = ImageReader(max_image_voxels)
    store = JobStore(state)
    jobs = JobQueue(store, PredictionRunner(models, reader=reader, roots=roots, results=results),
                    workers=workers, max_queued=max_queued)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        _remove_orphan_uploads(uploads, store)
        jobs.start()
        try:
            yield
        finally:
            jobs.stop(timeout=5)

    app = FastAPI(title="medseg serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Prediction jobs with medseg models. Send 'Authorization: Bearer <token>'.")
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes, upload_path="/v1/jobs")
    app.add_middleware(TokenAuth, tokens=tokens, open_paths=OPEN_PATHS, limiter=limiter)  # outermost: first
    app.state.jobs, app.state.store = jobs, store
    bearer = HTTPBearer(auto_error=False, description="a token of the server's --tokens file")
    api = APIRouter(dependencies=[Depends(bearer)], responses={401: _ERRORS[401], 429: _ERRORS[429]})

    @app.exception_handler(MedsegError)
    async def user_error(request: Request, error: MedsegError) -> JSONResponse:
        status = error.status if isinstance(error, PathRefused) else 413 if isinstance(error, ImageTooLarge) else 422
        return JSONResponse({"detail": str(error)}, status_code=status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=413)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull) -> JSONResponse:
        wait = max(1, math.ceil(store.mean_run_seconds() * (error.waiting + 1) / workers))
        return JSONResponse({"detail": f"the queue is full ({error} jobs waiting; fix: retry after {wait} s)"},
                            status_code=429, headers={"retry-after": str(wait)})

    def chosen_model(name: Optional[str]) -> str:
        if name is None and len(models) == 1:
            return next(iter(models))
        if name not in models:
            given = "no model named" if name is None else f"unknown model {name[:100]!r};"
            raise MedsegError(f"{given} this server has {', '.join(models)}", fix="pass 'model' with one of them")
        return name

    @api.post("/v1/jobs", status_code=202, response_model=JobInfo, openapi_extra=_UPLOAD_BODY,
              responses={s: _ERRORS[s] for s in (403, 413, 422)})
    async def submit(request: Request) -> JSONResponse:
        caller = request.state.token.name
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            # parsed here, not by FastAPI, so that BodyLimit's BodyTooLarge reaches its 413 handler
            form = await request.form(max_files=1, max_fields=4)
            try:
                file, model = form.get("file"), form.get("model")
                if not isinstance(file, StarletteUploadFile):
                    raise MedsegError("the upload has no file", fix="send multipart/form-data with the file in 'file'")
                if model is not None and not isinstance(model, str):
                    raise MedsegError("'model' must be a text field", fix="send the model's name")
                job = await run_in_threadpool(_upload_job, file, chosen_model(model), caller, uploads, reader)
            finally:
                await form.close()
        else:
            job_request = _json_request(await request.body())
            job = await run_in_threadpool(_path_job, job_request, chosen_model(job_request.model), caller,
                                          roots, reader)
        try:
            await run_in_threadpool(jobs.submit, job)  # a synced commit: off the event loop
        except QueueFull:
            if job.source == "upload":
                Path(job.input_path).unlink(missing_ok=True)
            raise
        return JSONResponse(job.info(), status_code=202, headers={"location": f"/v1/jobs/{job.id}"})

    def known_job(request: Request, job_id: str) -> Job:
        """The job, when the caller's token submitted it (another token's job is as unknown as a wrong id)."""
        job = store.get(job_id)
        if job is None or job.caller != request.state.token.name:
            raise HTTPException(404, f"no job '{job_id[:64]}' of this token (fix: use the id that POST /v1/jobs "
                                     "returned to this token)")
        return job

    @api.get("/v1/jobs/{job_id}", response_model=JobInfo, responses={404: {"description": "unknown job"}})
    async def job_status(request: Request, job_id: str, wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="seconds "
                         "to wait for the job to end before answering (a long poll)")) -> dict:
        job = known_job(request, job_id)
        if wait > 0 and job.status not in ("done", "failed"):
            job = await jobs.wait(job_id, wait) or job
        return job.info()

    @api.get("/v1/jobs/{job_id}/result", response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}, "description": "the label file"},
                        404: {"description": "unknown job"}, 409: {"description": "the job is not done"}})
    def job_result(request: Request, job_id: str) -> FileResponse:
        job = known_job(request, job_id)
        if job.status != "done" or not job.result_path or not Path(job.result_path).is_file():
            why = f": {job.error}" if job.error else " yet (fix: poll GET /v1/jobs/{id} until it is done)"
            raise HTTPException(409, f"job {job.id} is {job.status}, it has no result{why}")
        path = Path(job.result_path)
        return FileResponse(path, filename=path.name, media_type="application/octet-stream")

    @api.get("/v1/models", response_model=list[ModelInfo])
    def list_models() -> list[dict]:
        return [model.info for model in models.values()]

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz", response_model=Health, responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        ready = bool(models) and jobs.alive
        body = {"status": "ready" if ready else "starting", "models": len(models),
                "workers": jobs.workers if jobs.alive else 0, "queued": store.count("queued"),
                "running": store.count("running")}
        return JSONResponse(body, status_code=200 if ready else 503)

    app.include_router(api)
    app.openapi = lambda: _openapi_with_job_request(app)
    return app


def _openapi_with_job_request(app: FastAPI) -> dict:
    """FastAPI's document plus the schemas of the JSON job body (declared by hand in ``_UPLOAD_BODY``, because
    the route parses its body itself, so FastAPI does not collect them)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        job_request = JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(job_request.pop("$defs", {}))
        schemas["JobRequest"] = job_request
        app.openapi_schema = document
    return app.openapi_schema


def _remove_orphan_uploads(uploads: Path, store: JobStore) -> None:
    """Uploads of no waiting job: what a server killed while it stored an upload (or before its job was
    committed) left behind."""
    waiting = {store.get(i).input_path for status in ("queued", "running") for i in store.ids(status)}
    for path in uploads.iterdir():
        if str(path) not in waiting:
            path.unlink(missing_ok=True)


def _json_request(body: bytes) -> JobRequest:
    try:
        return JobRequest.model_validate_json(body or b"{}")
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:5])
        raise MedsegError(f"not a job request ({problems})",
                          fix='send JSON {"path": "/allowed/root/image.nii.gz"} or multipart with "file"') from None


def _path_job(request: JobRequest, model: str, caller: str, roots: Sequence[Path], reader: ImageReader) -> Job:
    if request.dicomweb is not None:
        # a 4xx, not 501: the request cannot succeed on this server as configured, and no 5xx means a fault
        raise MedsegError("DICOMweb jobs are not configured on this server",
                          fix="send the image as an upload or as a path under an allowed root")
    if request.path is None:
        raise MedsegError("the job names no image", fix='send {"path": ...} or upload the file as "file"')
    path = confine(request.path, roots)
    suffix = "" if path.is_dir() else image_suffix(path)
    if suffix is None:
        raise MedsegError("not an image file medseg reads", path=request.path[:300],
                          fix="send an image file (NIfTI, NRRD, MHA, PNG, TIFF, ...) or a DICOM series folder")
    reader.check(path, name=request.path[:300])
    return Job(model=model, caller=caller, source="path", input_path=str(path), input_name=path.name,
               result_suffix=result_suffix(suffix))


def _upload_job(file: StarletteUploadFile, model: str, caller: str, uploads: Path, reader: ImageReader) -> Job:
    """Store the upload under ``uploads`` (complete before its final name), check its header, make its job."""
    name = Path(file.filename or "").name[:255]
    suffix = image_suffix(name)
    if suffix not in UPLOAD_SUFFIXES:
        raise MedsegError(f"cannot predict '{name or 'the upload'}': not an accepted image type",
                          fix=f"upload one of {', '.join(UPLOAD_SUFFIXES)}")
    job_id = uuid.uuid4().hex
    stored = uploads / f"{job_id}{suffix}"
    partial = uploads / f".{job_id}.part{suffix}"
    try:
        with open(partial, "wb") as stream:
            shutil.copyfileobj(file.file, stream, 2**20)
            stream.flush()
            os.fsync(stream.fileno())
        reader.check(partial, name=name)
        os.replace(partial, stored)
    finally:
        partial.unlink(missing_ok=True)
    return Job(id=job_id, model=model, caller=caller, source="upload", input_path=str(stored), input_name=name,
               result_suffix=result_suffix(suffix))
