"""The HTTP app behind ``medseg interactive``: one static page and a JSON API over ``InteractiveSession`` (no model
logic here). Every request needs the token (``guard.TokenGuard``); uploads are size-limited and never unpickled.

    GET  /                                      the page (GET /?token=T sets the cookie and redirects here)
    GET  /api/images                            open images
    POST /api/images                            multipart upload, field "file" (PNG/JPG/BMP/TIFF/NIfTI/NRRD/MHA)
    POST /api/images/open        {"path"}       open a file or DICOM folder under the allowed roots
    GET  /api/images/{id}                       shape, slices, spacing
    GET  /api/images/{id}/slices/{k}/image.png  the slice for display
    GET  /api/images/{id}/slices/{k}/mask       the slice's mask (run lengths, see ``encoding.mask_rle``), prompts
    POST /api/images/{id}/prompts  {"slice", "type": click|box|scribble, "positive", "point"|"start","stop"|"points"}
    POST /api/images/{id}/undo     {"slice"}      POST /api/images/{id}/reset {"slice"}
    POST /api/images/{id}/propagate {"slice", "max_distance"?}  carry a 3D slice's mask to its neighbours:
                                                the filled slices and the time it took
    POST /api/images/{id}/save     {"path"}     write the mask under the allowed roots
    GET  /api/images/{id}/mask-file[?suffix=]   the mask file, in the image's geometry, for download

Coordinates are ``(row, col)`` pixels of the slice, as in ``medseg.interactive.prompts``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Union

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile as StarletteUploadFile

from medseg.errors import MedsegError
from medseg.interactive.prompts import Box, Click, Prompt, Scribble
from medseg.interactive.segmenter import Segmenter
from medseg.interactive.session import InteractiveSession
from medseg.io import Image, image_suffix, read_image, strip_suffix
from medseg.serve.encoding import mask_rle, png_bytes
from medseg.serve.guard import BodyLimit, BodyTooLarge, TokenGuard

STATIC = Path(__file__).parent / "static"
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".mha")
DEFAULT_MAX_UPLOAD_BYTES = 1024 * 2**20
SessionFactory = Callable[[], InteractiveSession]


@dataclass
class OpenImage:
    """One opened image: its session, the name it came with, and a lock (requests run in a thread pool)."""

    id: str
    name: str
    suffix: str  # of the source file; "" for a DICOM folder
    session: InteractiveSession
    lock: threading.Lock

    def info(self) -> dict:
        image = self.session.image
        return {"id": self.id, "name": self.name, "ndim": image.ndim, "channels": image.num_channels,
                "spatial_shape": list(image.spatial_shape), "slice_shape": list(self.session.slice_shape),
                "num_slices": self.session.num_slices, "spacing": list(image.spacing),
                "mask_name": self.mask_name()}

    def mask_name(self, suffix: str | None = None) -> str:
        """``<name>_mask<suffix>``; by default the source's format, PNG for lossy rasters, NIfTI for DICOM."""
        if suffix is None:
            suffix = {".jpg": ".png", ".jpeg": ".png", ".bmp": ".png", "": ".nii.gz"}.get(self.suffix, self.suffix)
        return f"{strip_suffix(self.name)}_mask{suffix}"


class SessionStore:
    """The open images, newest last; opening one more than ``capacity`` forgets the oldest."""

    def __init__(self, factory: SessionFactory, capacity: int = 4):
        self.factory = factory
        self.capacity = capacity
        self._images: OrderedDict[str, OpenImage] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, image: Image, name: str, suffix: str) -> OpenImage:
        session = self.factory()
        session.set_image(image)
        entry = OpenImage(uuid.uuid4().hex[:12], name, suffix, session, threading.Lock())
        with self._lock:
            self._images[entry.id] = entry
            while len(self._images) > self.capacity:
                self._images.popitem(last=False)
        return entry

    def get(self, image_id: str) -> OpenImage:
        with self._lock:
            if image_id not in self._images:
                raise HTTPException(404, f"no open image '{image_id}' (it was closed or the server restarted: "
                                         "open the image again)")
            return self._images[image_id]

    def list(self) -> list[OpenImage]:
        with self._lock:
            return list(self._images.values())


class PathRequest(BaseModel):
    path: str


class SliceRequest(BaseModel):
    slice: int = 0


class PropagateRequest(BaseModel):
    slice: int
    max_distance: Optional[int] = None


class PromptRequest(BaseModel):
    slice: int = 0
    type: Literal["click", "box", "scribble"]
    positive: bool = True
    point: Optional[tuple[float, float]] = None
    start: Optional[tuple[float, float]] = None
    stop: Optional[tuple[float, float]] = None
    points: Optional[list[tuple[float, float]]] = None

    def prompt(self) -> Prompt:
        if self.type == "click":
            if self.point is None:
                raise MedsegError("a click needs 'point': [row, col]")
            return Click(self.point, self.positive)
        if self.type == "box":
            if self.start is None or self.stop is None:
                raise MedsegError("a box needs 'start' and 'stop': [row, col] of two opposite corners")
            return Box(self.start, self.stop)
        if not self.points:
            raise MedsegError("a scribble needs 'points': [[row, col], ...]")
        return Scribble(tuple(self.points), self.positive)


def create_app(source: Union[Segmenter, SessionFactory], *, token: str, allowed_roots: list[Path] | None = None,
               image: Path | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> FastAPI:
    """The app for a segmenter (one ``InteractiveSession`` per opened image) or a factory of sessions.

    ``allowed_roots``: folders whose files may be opened and written by path (none when None: upload and
    download only). ``image``: a file to open at start (it need not lie under the roots).
    """
    factory = (lambda: InteractiveSession(source)) if _is_segmenter(source) else source
    roots = [Path(root).resolve() for root in allowed_roots or []]
    store = SessionStore(factory)
    app = FastAPI(title="medseg interactive", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TokenGuard, token=token)
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if image is not None:
        image = Path(image)
        store.open(read_image(image), image.name, image_suffix(image) or "")

    @app.exception_handler(MedsegError)
    async def user_error(request: Request, error: MedsegError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=413)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "interactive.html").read_text(encoding="utf-8"))

    @app.get("/api/images")
    def list_images() -> list[dict]:
        return [entry.info() for entry in store.list()]

    @app.post("/api/images")
    async def upload(request: Request) -> dict:
        # The form is parsed here, not by FastAPI, so that BodyTooLarge reaches its 413 handler.
        form = await request.form(max_files=1, max_fields=4)
        try:
            file = form.get("file")
            if not isinstance(file, StarletteUploadFile):
                raise MedsegError("the upload has no file", fix="send multipart/form-data with the file in 'file'")
            entry = await run_in_threadpool(_open_upload, store, file)
        finally:
            await form.close()
        return entry.info()

    @app.post("/api/images/open")
    def open_path(request: PathRequest) -> dict:
        path = _inside_roots(request.path, roots, "open")
        if not path.is_dir() and image_suffix(path) not in UPLOAD_SUFFIXES:
            raise MedsegError("not an accepted image type", path=path,
                              fix=f"open one of {', '.join(UPLOAD_SUFFIXES)} or a DICOM folder")
        return store.open(read_image(path), path.name, "" if path.is_dir() else image_suffix(path)).info()

    @app.get("/api/images/{image_id}")
    def image_info(image_id: str) -> dict:
        return store.get(image_id).info()

    @app.get("/api/images/{image_id}/slices/{index}/image.png")
    def slice_png(image_id: str, index: int) -> Response:
        entry = store.get(image_id)
        with entry.lock:
            pixels = entry.session.display_slice(index)
        return Response(png_bytes(pixels), media_type="image/png", headers={"cache-control": "private, max-age=600"})

    @app.get("/api/images/{image_id}/slices/{index}/mask")
    def slice_mask(image_id: str, index: int) -> dict:
        entry = store.get(image_id)
        with entry.lock:
            return _mask_state(entry.session, index)

    @app.post("/api/images/{image_id}/prompts")
    def add_prompt(image_id: str, request: PromptRequest) -> dict:
        entry = store.get(image_id)
        prompt = request.prompt()
        with entry.lock:
            start = time.perf_counter()
            entry.session.add(prompt, request.slice)
            total_ms = (time.perf_counter() - start) * 1000
            return {**_mask_state(entry.session, request.slice), "predict_ms": entry.session.last_latency_ms,
                    "total_ms": total_ms}

    @app.post("/api/images/{image_id}/undo")
    def undo(image_id: str, request: SliceRequest) -> dict:
        return _edit_slice(store.get(image_id), InteractiveSession.undo, request.slice)

    @app.post("/api/images/{image_id}/reset")
    def reset(image_id: str, request: SliceRequest) -> dict:
        return _edit_slice(store.get(image_id), InteractiveSession.reset, request.slice)

    @app.post("/api/images/{image_id}/propagate")
    def propagate(image_id: str, request: PropagateRequest) -> dict:
        entry = store.get(image_id)
        with entry.lock:
            start = time.perf_counter()
            filled = entry.session.propagate(request.slice, request.max_distance)
            total_ms = (time.perf_counter() - start) * 1000
        return {"slice": request.slice, "filled": filled, "total_ms": total_ms,
                "ms_per_slice": total_ms / len(filled) if filled else None}

    @app.post("/api/images/{image_id}/save")
    def save(image_id: str, request: PathRequest) -> dict:
        entry = store.get(image_id)
        path = _inside_roots(request.path, roots, "write")
        if path.is_dir():
            path = path / entry.mask_name()
        with entry.lock:
            written = entry.session.save(path)
        return {"path": str(written), "shape": list(entry.session.image.spatial_shape)}

    @app.get("/api/images/{image_id}/mask-file")
    def mask_file(image_id: str, suffix: Optional[str] = None) -> FileResponse:
        entry = store.get(image_id)
        if suffix is not None and image_suffix(f"x{suffix}") != suffix.lower():
            raise MedsegError(f"unknown mask format '{suffix}'", fix="use e.g. .png, .nii.gz, .nrrd or .mha")
        name = entry.mask_name(suffix)
        folder = Path(tempfile.mkdtemp(prefix="medseg-mask-"))
        with entry.lock:
            written = entry.session.save(folder / name)
        return FileResponse(written, filename=name, media_type="application/octet-stream",
                            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

    return app


def _open_upload(store: SessionStore, file: StarletteUploadFile) -> OpenImage:
    """Read an uploaded image (by the suffix of its name, never unpickling) and open a session on it."""
    name = Path(file.filename or "").name
    suffix = image_suffix(name)
    if suffix not in UPLOAD_SUFFIXES:
        raise MedsegError(f"cannot open '{name or 'the upload'}': not an accepted image type",
                          fix=f"upload one of {', '.join(UPLOAD_SUFFIXES)}")
    with tempfile.TemporaryDirectory(prefix="medseg-upload-") as folder:
        temporary = Path(folder) / f"upload{suffix}"
        with open(temporary, "wb") as stream:
            shutil.copyfileobj(file.file, stream, 2**20)
        try:
            image = read_image(temporary)
        except MedsegError as error:
            raise MedsegError(str(error).replace(str(temporary), name)) from None
    return store.open(image, name, suffix)


def _edit_slice(entry: OpenImage, edit: Callable[[InteractiveSession, int], object], index: int) -> dict:
    with entry.lock:
        edit(entry.session, index)
        return _mask_state(entry.session, index)


def _mask_state(session: InteractiveSession, index: int) -> dict:
    mask = session.slice_mask(index)
    prompts = [_prompt_json(p) for p in session.prompts(index).prompts]
    return {"slice": index, "area": int(mask.sum()), "prompts": prompts, "mask": mask_rle(mask)}


def _prompt_json(prompt: Prompt) -> dict:
    if isinstance(prompt, Click):
        return {"type": "click", "positive": prompt.positive, "point": list(prompt.point)}
    if isinstance(prompt, Box):
        return {"type": "box", "start": list(prompt.start), "stop": list(prompt.stop)}
    return {"type": "scribble", "positive": prompt.positive, "points": [list(p) for p in prompt.points]}


def _inside_roots(text: str, roots: list[Path], action: str) -> Path:
    """The resolved ``text``; 403 unless it lies under one of ``roots`` (links resolved first)."""
    path = Path(text).expanduser().resolve()
    if not any(path == root or path.is_relative_to(root) for root in roots):
        where = ", ".join(str(r) for r in roots) or "nowhere: the server was started without allowed roots"
        raise HTTPException(403, f"{path}: the server may {action} files only under {where} (fix: use a path "
                                 "there, upload the file instead, or restart the server with that folder allowed)")
    return path


def _is_segmenter(source: object) -> bool:
    return callable(getattr(source, "embed", None)) and callable(getattr(source, "predict", None))
