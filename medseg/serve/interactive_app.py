"""The HTTP app behind ``medseg interactive``: one static page and a JSON API over ``InteractiveSession`` (no model
logic here). Every request needs the token (``guard.TokenGuard``); request bodies are size-limited while they stream
(``guard.BodyLimit``), images are refused from their header before decoding when they declare more than
``max_image_voxels`` values (``limits.ImageReader``, 413), and uploads are never unpickled. What runs
concurrently, and what waits for what, is said in ``store``.

    GET  /                                      the page (GET /?token=T sets the cookie and redirects here)
    GET  /api/images                            open images
    POST /api/images                            multipart upload, field "file" (PNG/JPG/BMP/TIFF/NIfTI/NRRD/MHA)
    POST /api/images/open        {"path"}       open a file or DICOM folder under the allowed roots
    GET  /api/images/{id}                       shape, slices, spacing
    GET  /api/images/{id}/slices/{k}/image.png  the slice for display
    DELETE /api/images/{id}                     close it (what was done on it is forgotten)
    GET  /api/images/{id}/planes/{axis}/{k}/data    a plane for display with the page's window: float32 bytes,
                                                C x H x W in the ``x-shape`` header (axis 0: the model's slices)
    GET  /api/images/{id}/planes/{axis}/{k}/labels  the multi-label map there: uint8 bytes, H x W
    POST /api/images/{id}/labels   {"value", "name"}  name (or add) a structure; the label list
    GET  /api/images/{id}/slices/{k}/mask[?label=]  a structure's mask on a slice (run lengths, see
                                                ``encoding.mask_rle``), its prompts, whether redo can act
    POST /api/images/{id}/prompts  {"slice", "label"?, "type": click|box|scribble, "positive",
                                    "point"|"start","stop"|"points"}
    POST /api/images/{id}/edit     {"slice", "label"?, "kind": paint|erase|fill_holes|largest_component,
                                    "points"?, "radius"?}  a manual edit
    POST /api/images/{id}/undo     {"slice", "label"?}   POST .../redo {"slice", "label"?}   POST .../reset (same)
    POST /api/images/{id}/propagate {"slice", "label"?, "max_distance"?}  carry a 3D slice's mask to its
                                                neighbours: the filled slices and the time it took
    POST /api/images/{id}/examples {"label"?}    the in-context model fills the structure in from the slices
                                                marked (a volume) or from the other open 2D images marked
    POST /api/images/{id}/save     {"path"}     write the mask under the allowed roots
    GET  /api/images/{id}/mask-file[?suffix=]   the mask file, in the image's geometry, for download

Every open image keeps its structures, masks and undo history on the server until it is closed (or the server
stops), so a reload of the page finds them again. Coordinates are ``(row, col)`` pixels of the slice, as in
``medseg.interactive.prompts``. User errors are 400 (a bad path, slice, label or prompt), 403 (outside the roots),
404 (unknown image), 413 (too large), 422 (malformed JSON).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Literal, Optional, Union

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile as StarletteUploadFile

from medseg.errors import MedsegError
from medseg.interactive.prompts import Box, Click, Prompt, Scribble
from medseg.interactive.segmenter import Segmenter
from medseg.interactive.session import InteractiveSession
from medseg.io import image_suffix
from medseg.serve.guard import BodyLimit, BodyTooLarge, TokenGuard
from medseg.serve.limits import DEFAULT_MAX_IMAGE_VOXELS, ImageReader, ImageTooLarge, parse_path, path_kind
from medseg.serve.store import ModelFirst, OpenImage, SessionFactory, SessionStore

STATIC = Path(__file__).parent / "static"
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".mha")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".mha")  # one file each
DEFAULT_MAX_UPLOAD_BYTES = 1024 * 2**20
MAX_SCRIBBLE_POINTS = 20_000
# Slice embeddings kept per open image: the default model's is 1 MiB (five levels at a 128 grid); a page works on
# many slices of a volume (and several clients on one image), and a miss costs the encoder, 10-30x the decoder.
EMBEDDING_CACHE = 64
# Slice pictures rendered at once (all images): windowing makes a few float32 copies of the slice, so that 20
# clients asking for the slices of a 10^8-pixel photo at once would otherwise need 20 x 2 GB.
RENDERS_AT_ONCE = 2
Point = tuple[float, float]


class PathRequest(BaseModel):
    path: str


class SliceRequest(BaseModel):
    slice: int = 0
    label: int = 1


class PropagateRequest(BaseModel):
    slice: int
    label: int = 1
    max_distance: Optional[int] = None


class LabelRequest(BaseModel):
    value: int
    name: str = Field(max_length=200)


class ExamplesRequest(BaseModel):
    label: int = 1


class EditRequest(SliceRequest):
    kind: Literal["paint", "erase", "fill_holes", "largest_component"]
    points: list[Point] = Field(default_factory=list, max_length=MAX_SCRIBBLE_POINTS)
    radius: float = 0.0


class PromptRequest(BaseModel):
    slice: int = 0
    label: int = 1
    type: Literal["click", "box", "scribble"]
    positive: bool = True
    point: Optional[Point] = None
    start: Optional[Point] = None
    stop: Optional[Point] = None
    points: Optional[list[Point]] = Field(None, max_length=MAX_SCRIBBLE_POINTS)

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
               image: Path | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_image_voxels: int = DEFAULT_MAX_IMAGE_VOXELS, structures: dict[int, str] | None = None,
               incontext: Callable[[], object] | None = None) -> FastAPI:
    """The app for a segmenter (one ``InteractiveSession`` per opened image) or a factory of sessions.

    ``allowed_roots``: folders whose files may be opened and written by path (none when None: upload and
    download only). ``image``: a file to open at start (it need not lie under the roots; ``ImageTooLarge``, a
    ``MedsegError``, when its header declares more than ``max_image_voxels`` values). ``max_upload_bytes``: the
    largest upload body. The open images together keep at most ``8 * max_image_voxels`` bytes of arrays (older
    ones are closed), beside the newest. ``structures``: the label list every opened image starts with (value
    -> name; default one "object", 1); the page adds more. ``incontext``: makes the in-context model of the
    examples mode (an ``InContextSession``) when it is first used; default: the shipped model.
    """
    make = (lambda: InteractiveSession(source, cache_size=EMBEDDING_CACHE)) if _is_segmenter(source) else source

    def factory() -> InteractiveSession:
        session = make()
        if structures:
            session.set_labels(structures)
        return session

    roots = [Path(root).resolve() for root in allowed_roots or []]
    reader = ImageReader(max_image_voxels)
    store = SessionStore(factory, max_bytes=8 * reader.max_voxels)
    prompts_first = ModelFirst()
    rendering = threading.BoundedSemaphore(RENDERS_AT_ONCE)
    examples_model = _FirstUse(incontext or _shipped_incontext)
    app = FastAPI(title="medseg interactive", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TokenGuard, token=token)
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if image is not None:
        image = Path(image)
        store.open(reader.read(image), image.name, image_suffix(image) or "")

    @app.exception_handler(MedsegError)
    async def user_error(request: Request, error: MedsegError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(ImageTooLarge)
    async def image_too_large(request: Request, error: ImageTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(error), "max_image_voxels": reader.max_voxels}, status_code=413)

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
            entry = await run_in_threadpool(_open_upload, store, reader, file)
        finally:
            await form.close()
        return entry.info()

    @app.post("/api/images/open")
    def open_path(request: PathRequest) -> dict:
        path = _inside_roots(request.path, roots, "open")
        kind = path_kind(path)
        if kind in ("missing", "other"):
            raise MedsegError("file not found" if kind == "missing" else "not a regular file or a folder",
                              path=path, fix="open an image file or a DICOM folder")
        if kind == "file" and image_suffix(path) not in UPLOAD_SUFFIXES:
            raise MedsegError("not an accepted image type", path=path,
                              fix=f"open one of {', '.join(UPLOAD_SUFFIXES)} or a DICOM folder")
        entry = store.open(reader.read(path), path.name, "" if kind == "folder" else image_suffix(path))
        return entry.info()

    @app.get("/api/images/{image_id}")
    def image_info(image_id: str) -> dict:
        return store.get(image_id).info()

    @app.get("/api/images/{image_id}/slices/{index}/image.png")
    def slice_png(image_id: str, index: int) -> Response:
        entry = store.get(image_id)
        prompts_first.wait_turn()
        with rendering:
            png = entry.slice_png(index)
        return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=600"})

    @app.delete("/api/images/{image_id}")
    def close_image(image_id: str) -> dict:
        store.close(image_id)
        return {"closed": image_id}

    @app.get("/api/images/{image_id}/planes/{axis}/{index}/data")
    def plane_data(image_id: str, axis: int, index: int) -> Response:
        entry = store.get(image_id)
        prompts_first.wait_turn()
        plane = entry.session.plane(axis, index)
        return Response(plane.astype("<f4").tobytes(), media_type="application/octet-stream",
                        headers={"x-shape": ",".join(str(s) for s in plane.shape),
                                 "cache-control": "private, max-age=600"})

    @app.get("/api/images/{image_id}/planes/{axis}/{index}/labels")
    def plane_labels(image_id: str, axis: int, index: int) -> Response:
        entry = store.get(image_id)
        with entry.lock:  # the labels of other axes read across slices a prompt may be changing
            labels = entry.session.label_plane(axis, index)
        return Response(labels.tobytes(), media_type="application/octet-stream",
                        headers={"x-shape": ",".join(str(s) for s in labels.shape), "cache-control": "no-store"})

    @app.post("/api/images/{image_id}/labels")
    def set_label(image_id: str, request: LabelRequest) -> list[dict]:
        entry = store.get(image_id)
        with entry.lock:
            entry.session.set_label(request.value, request.name)
        return entry.labels()

    @app.get("/api/images/{image_id}/slices/{index}/mask")
    def slice_mask(image_id: str, index: int, label: int = 1) -> dict:
        return store.get(image_id).mask_state(index, label)

    @app.post("/api/images/{image_id}/prompts")
    def add_prompt(image_id: str, request: PromptRequest) -> dict:
        entry = store.get(image_id)
        prompt = request.prompt()
        index = entry.check_slice(request.slice)
        with prompts_first.model(), entry.lock:
            start = time.perf_counter()
            entry.session.add(prompt, index, request.label)
            total_ms = (time.perf_counter() - start) * 1000
            return {**entry.publish(index, label=request.label), "predict_ms": entry.session.last_latency_ms,
                    "total_ms": total_ms}

    @app.post("/api/images/{image_id}/edit")
    def manual_edit(image_id: str, request: EditRequest) -> dict:
        return _edit_slice(store.get(image_id), lambda session, index, label: session.edit(
            request.kind, index, label, points=request.points, radius=request.radius), request)

    @app.post("/api/images/{image_id}/undo")
    def undo(image_id: str, request: SliceRequest) -> dict:
        return _edit_slice(store.get(image_id), InteractiveSession.undo, request)

    @app.post("/api/images/{image_id}/redo")
    def redo(image_id: str, request: SliceRequest) -> dict:
        return _edit_slice(store.get(image_id), InteractiveSession.redo, request)

    @app.post("/api/images/{image_id}/reset")
    def reset(image_id: str, request: SliceRequest) -> dict:
        return _edit_slice(store.get(image_id), InteractiveSession.reset, request)

    @app.post("/api/images/{image_id}/propagate")
    def propagate(image_id: str, request: PropagateRequest) -> dict:
        entry = store.get(image_id)
        index = entry.check_slice(request.slice)
        with entry.lock:
            start = time.perf_counter()
            filled = entry.session.propagate(index, request.max_distance, request.label)
            total_ms = (time.perf_counter() - start) * 1000
            entry.publish(*filled, label=request.label)
        return {"slice": index, "filled": filled, "total_ms": total_ms,
                "ms_per_slice": total_ms / len(filled) if filled else None}

    @app.post("/api/images/{image_id}/examples")
    def examples(image_id: str, request: ExamplesRequest) -> dict:
        from medseg.serve.examples import examples_of, fill_from_examples

        entry = store.get(image_id)
        model = examples_model.get()
        others = []
        if entry.session.image.ndim == 2:
            for other in (e for e in store.list() if e.id != entry.id):
                with other.lock:  # one lock at a time: two fills on two images cannot wait for each other
                    pair = examples_of(other.session, request.label)
                if pair is not None:
                    others.append(pair)
        with prompts_first.model(), entry.lock:
            start = time.perf_counter()
            filled, count = fill_from_examples(model, entry.session, request.label, others)
            total_ms = (time.perf_counter() - start) * 1000
            if filled:
                entry.publish(*filled, label=request.label)
        return {"label": request.label, "filled": filled, "examples": count, "total_ms": total_ms}

    @app.post("/api/images/{image_id}/save")
    def save(image_id: str, request: PathRequest) -> dict:
        entry = store.get(image_id)
        path = _inside_roots(request.path, roots, "write")
        if path_kind(path) == "folder":
            path = path / entry.mask_name()
        written = _write_mask(entry, path)
        return {"path": str(written), "shape": list(entry.session.image.spatial_shape)}

    @app.get("/api/images/{image_id}/mask-file")
    def mask_file(image_id: str, suffix: Optional[str] = None) -> FileResponse:
        entry = store.get(image_id)
        if suffix is not None and suffix.lower() not in MASK_SUFFIXES:
            raise MedsegError(f"unknown mask format '{suffix[:40]}'", fix=f"use one of {', '.join(MASK_SUFFIXES)}")
        name = entry.mask_name(suffix and suffix.lower())
        folder = Path(tempfile.mkdtemp(prefix="medseg-mask-"))
        try:
            written = _write_mask(entry, folder / name)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(written, filename=name, media_type="application/octet-stream",
                            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

    return app


def _open_upload(store: SessionStore, reader: ImageReader, file: StarletteUploadFile) -> OpenImage:
    """Read an uploaded image (by the suffix of its name, header first, never unpickling) and open a session."""
    name = Path(file.filename or "").name
    suffix = image_suffix(name)
    if suffix not in UPLOAD_SUFFIXES:
        raise MedsegError(f"cannot open '{name[:200] or 'the upload'}': not an accepted image type",
                          fix=f"upload one of {', '.join(UPLOAD_SUFFIXES)}")
    with tempfile.TemporaryDirectory(prefix="medseg-upload-") as folder:
        temporary = Path(folder) / f"upload{suffix}"
        with open(temporary, "wb") as stream:
            shutil.copyfileobj(file.file, stream, 2**20)
        image = reader.read(temporary, name=name)
    return store.open(image, name, suffix)


def _edit_slice(entry: OpenImage, edit: Callable[[InteractiveSession, int, int], object],
                request: SliceRequest) -> dict:
    index = entry.check_slice(request.slice)
    with entry.lock:
        edit(entry.session, index, request.label)
        return entry.publish(index, label=request.label)


def _write_mask(entry: OpenImage, path: Path) -> Path:
    """The session's mask written to ``path`` (under the image's lock: a propagation may be changing it)."""
    try:
        with entry.lock:
            return entry.session.save(path)
    except OSError as error:
        raise MedsegError(f"cannot write the mask ({error.strerror or error})", path=path,
                          fix="choose a writable folder, and a name that is not an existing folder") from None


def _inside_roots(text: str, roots: list[Path], action: str) -> Path:
    """The resolved ``text``; 400 when it is no path, 403 unless it lies under one of ``roots`` (links resolved
    first)."""
    path = parse_path(text)
    if not any(path == root or path.is_relative_to(root) for root in roots):
        where = ", ".join(str(r) for r in roots) or "nowhere: the server was started without allowed roots"
        raise HTTPException(403, f"{path}: the server may {action} files only under {where} (fix: use a path "
                                 "there, upload the file instead, or restart the server with that folder allowed)")
    return path


class _FirstUse:
    """``make()`` called once, on the first ``get()`` (under a lock); its ``MedsegError`` is raised at each call
    until it succeeds."""

    def __init__(self, make: Callable[[], object]):
        self.make, self.value, self.lock = make, None, threading.Lock()

    def get(self) -> object:
        with self.lock:
            if self.value is None:
                self.value = self.make()
            return self.value


def _shipped_incontext() -> object:
    from medseg.incontext.session import InContextSession

    return InContextSession()


def _is_segmenter(source: object) -> bool:
    return callable(getattr(source, "embed", None)) and callable(getattr(source, "predict", None))
