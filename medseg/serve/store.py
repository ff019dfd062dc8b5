"""The images the interactive server holds open, and what each one can answer without waiting for its model.

Concurrency: requests run in the server's thread pool. Each open image has one lock, held only while its session
changes (a prompt runs the model, undo, reset, propagate, save). Reading never takes it: the slice picture comes
from the image, which does not change once open, and the slice masks from ``OpenImage.states``, the last committed
answer per slice (published under the lock, read as one dictionary lookup). So the picture and the mask of any
slice never queue behind a prompt, and prompts on different images run at the same time. The other way round,
``ModelFirst`` holds new slice pictures back (50 ms at most) while prompts are running, so that prompts do not
queue for the CPU behind rendering.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
from fastapi import HTTPException

from medseg.errors import MedsegError
from medseg.interactive.prompts import Box, Click, Prompt
from medseg.interactive.session import InteractiveSession
from medseg.io import Image, strip_suffix
from medseg.serve.encoding import mask_rle, png_bytes

SessionFactory = Callable[[], InteractiveSession]


class ModelFirst:
    """Prompts before pictures: while a prompt runs or waits for its image (``model()``), a slice picture waits up
    to ``patience`` seconds before it starts rendering (``wait_turn()``), so that clients scrolling through slices
    do not take the CPU (and the GIL) from a click on a small machine; bench/serve_load.py measures it."""

    def __init__(self, patience: float = 0.05):
        self.patience = patience
        self._busy = 0
        self._idle = threading.Condition()

    @contextmanager
    def model(self) -> Iterator[None]:
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def wait_turn(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: not self._busy, timeout=self.patience)


@dataclass
class OpenImage:
    """One opened image: its session, the name it came with, the edit lock and the published slice states."""

    id: str
    name: str
    suffix: str  # of the source file; "" for a DICOM folder
    session: InteractiveSession
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (label, slice) -> ``mask_state`` JSON; absent: empty
    states: dict[tuple[int, int], dict] = field(default_factory=dict)
    _presets: list[dict] | None = field(default=None, repr=False)

    def info(self) -> dict:
        image = self.session.image
        return {"id": self.id, "name": self.name, "ndim": image.ndim, "channels": image.num_channels,
                "spatial_shape": list(image.spatial_shape), "slice_shape": list(self.session.slice_shape),
                "num_slices": self.session.num_slices, "spacing": list(image.spacing),
                "mask_name": self.mask_name(), "labels": self.labels(), "presets": self.presets()}

    def presets(self) -> list[dict]:
        """The image's window presets (computed once: the image does not change while it is open)."""
        if self._presets is None:
            self._presets = self.session.display_presets()
        return self._presets

    def labels(self) -> list[dict]:
        return [{"value": value, "name": name} for value, name in self.session.labels.items()]

    def mask_name(self, suffix: str | None = None) -> str:
        """``<name>_mask<suffix>``; by default the source's format, PNG for lossy rasters, NIfTI for DICOM."""
        if suffix is None:
            suffix = {".jpg": ".png", ".jpeg": ".png", ".bmp": ".png", "": ".nii.gz"}.get(self.suffix, self.suffix)
        return f"{strip_suffix(self.name)}_mask{suffix}"

    @property
    def nbytes(self) -> int:
        return int(self.session.image.array.nbytes)

    def check_slice(self, index: int) -> int:
        """``index`` when the image has that slice; ``MedsegError`` (400) otherwise."""
        count = self.session.num_slices
        if not 0 <= index < count:
            raise MedsegError(f"slice {index} does not exist, the image has {count} slice(s)",
                              fix=f"use 0..{count - 1}")
        return index

    def slice_png(self, index: int) -> bytes:
        """The PNG of a slice for display (grey as one channel: a third of the encoding work). No lock."""
        pixels = self.session.display_slice(self.check_slice(index))
        image = self.session.image
        if not (image.ndim == 2 and image.num_channels in (3, 4)):
            pixels = pixels[..., 0]  # display_slice repeats the grey channel three times
        return png_bytes(pixels)

    def mask_state(self, index: int, label: int = 1) -> dict:
        """The last committed mask and prompts of a slice's structure. No lock."""
        state = self.states.get((label, self.check_slice(index)))
        if state is not None:
            return state
        height, width = self.session.slice_shape
        return {"slice": index, "label": label, "area": 0, "prompts": [], "can_redo": False,
                "mask": {"shape": [height, width], "counts": [height * width]}}

    def publish(self, *indices: int, label: int = 1) -> dict:
        """Commit the session's current state of ``indices`` for ``label`` to ``states`` (call with ``lock``
        held); returns the first one's."""
        for index in indices:
            mask = self.session.slice_mask(index, label)
            if mask.any() or self.session.prompts(index, label).prompts or self.session.can_redo(index, label):
                self.states[(label, index)] = _state_json(self.session, index, label, mask)
            else:
                self.states.pop((label, index), None)
        return self.mask_state(indices[0], label) if indices else {}


class SessionStore:
    """The open images, newest last. Opening one more forgets the oldest while more than ``capacity`` are open or
    their arrays hold more than ``max_bytes`` together (the newest always stays)."""

    def __init__(self, factory: SessionFactory, capacity: int = 4, max_bytes: int | None = None):
        self.factory = factory
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, OpenImage] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, image: Image, name: str, suffix: str) -> OpenImage:
        session = self.factory()
        session.set_image(image)
        entry = OpenImage(uuid.uuid4().hex[:12], name, suffix, session)
        with self._lock:
            self._images[entry.id] = entry
            while len(self._images) > 1 and (len(self._images) > self.capacity or self._over_budget()):
                self._images.popitem(last=False)
        return entry

    def get(self, image_id: str) -> OpenImage:
        with self._lock:
            entry = self._images.get(image_id)
        if entry is None:
            raise HTTPException(404, f"no open image '{image_id[:64]}' (it was closed or the server restarted: "
                                     "open the image again)")
        return entry

    def list(self) -> list[OpenImage]:
        with self._lock:
            return list(self._images.values())

    def close(self, image_id: str) -> None:
        """Forget an open image and everything done on it (404 when it is not open)."""
        self.get(image_id)
        with self._lock:
            self._images.pop(image_id, None)

    def _over_budget(self) -> bool:
        return self.max_bytes is not None and sum(e.nbytes for e in self._images.values()) > self.max_bytes


def _state_json(session: InteractiveSession, index: int, label: int, mask: np.ndarray) -> dict:
    prompts = [_prompt_json(p) for p in session.prompts(index, label).prompts]
    return {"slice": index, "label": label, "area": int(mask.sum()), "prompts": prompts,
            "can_redo": session.can_redo(index, label), "mask": mask_rle(mask)}


def _prompt_json(prompt: Prompt) -> dict:
    if isinstance(prompt, Click):
        return {"type": "click", "positive": prompt.positive, "point": list(prompt.point)}
    if isinstance(prompt, Box):
        return {"type": "box", "start": list(prompt.start), "stop": list(prompt.stop)}
    return {"type": "scribble", "positive": prompt.positive, "points": [list(p) for p in prompt.points]}
