"""Prediction with onnxruntime: an exported folder (``medseg.config.onnx_folder``) becomes a ``Predictor`` whose
networks are onnxruntime sessions, so preprocessing, sliding window, mirroring TTA, fold averaging and restoring
are the torch Predictor's own code; only the network call differs.

onnxruntime is imported inside the functions: ``medseg`` imports and predicts with torch without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medseg.config.onnx_folder import OnnxPipeline, read_pipeline
from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor
from medseg.weights_file import sha256_file

logger = logging.getLogger(__name__)

ONNX_FIX = "pip install 'medseg[onnx]' (onnx, onnxscript, onnxruntime)"


class SharedSession:
    """An onnxruntime ``InferenceSession``, shared (not copied) by copies of the module that holds it: a session
    keeps no per-call state and may be run from several threads, and ``copy.deepcopy`` (the predictor's
    shape-only memory estimate copies its first network) cannot copy one."""

    def __init__(self, session: Any, path: Path):
        self.session, self.path = session, path

    def __deepcopy__(self, memo: dict) -> "SharedSession":
        return self


class OnnxNetwork(nn.Module):
    """A network-like adapter around one onnxruntime session: ``(B, C, *patch)`` float tensor -> logits
    ``(B, K, *patch)`` float32 on the CPU.

    ``batch``: the session's fixed batch size (None: dynamic). A fixed-batch session gets the input in chunks of
    ``batch`` samples, the last one padded with zeros and its padding dropped from the output, because the
    predictor's mirrored chunks vary in size. On the ``meta`` device (shape-only memory estimates) the output is
    an empty tensor of the right shape and the session is not run.
    """

    def __init__(self, session: SharedSession, *, spatial_dims: int, in_channels: int, num_classes: int,
                 input_name: str, output_name: str, batch: int | None):
        super().__init__()
        self.session = session
        self.input_name, self.output_name, self.batch = input_name, output_name, batch
        self.num_classes = int(num_classes)
        self.medseg_spec = {"name": "onnx", "spatial_dims": int(spatial_dims), "in_channels": int(in_channels),
                            "num_classes": self.num_classes}

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.session.session.run([self.output_name], {self.input_name: array})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":
            return x.new_empty((x.shape[0], self.num_classes, *x.shape[2:]), dtype=torch.float32)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if self.batch is None or len(array) == self.batch:
            return torch.from_numpy(self._run(array))
        outputs = []
        for start in range(0, len(array), self.batch):
            chunk = array[start:start + self.batch]
            count = len(chunk)
            if count < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - count, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self._run(chunk)[:count])
        return torch.from_numpy(np.concatenate(outputs))


def session_options(threads: int | None = None) -> Any:
    """onnxruntime session options for prediction on a CPU: ``threads`` intra-op threads (default torch's
    thread count, i.e. what the torch engine would use), one inter-op thread, and threads that sleep when idle
    instead of spinning (as ``OMP_WAIT_POLICY=PASSIVE`` for torch: spinning threads fight other work on a
    shared machine)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    return options


def open_session(path: str | Path, *, sha256: str | None = None, threads: int | None = None) -> SharedSession:
    """An onnxruntime CPU session of the ONNX file ``path``; with ``sha256`` the file's bytes must match it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MedsegError("onnxruntime is not installed", fix=ONNX_FIX) from None
    path = Path(path)
    if not path.is_file():
        raise MedsegError("ONNX file not found", path=path, fix="export the model again (medseg export)")
    if sha256 is not None and sha256_file(path) != sha256:
        raise MedsegError("the ONNX file's bytes differ from the sha256 that pipeline.json records (damaged or "
                          "replaced)", path=path, fix="export the model again (medseg export)")
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable or invalid models
        raise MedsegError(f"onnxruntime cannot load it ({type(error).__name__}: {str(error).splitlines()[0][:200]})",
                          path=path, fix="export the model again (medseg export)") from None
    return SharedSession(session, path)


def onnx_networks(folder: str | Path, pipeline: OnnxPipeline, folds: Sequence[str] | None = None, *,
                  threads: int | None = None) -> list[OnnxNetwork]:
    """One ``OnnxNetwork`` per chosen fold of the exported ``folder`` (default: every exported fold)."""
    records = {f.fold: f for f in pipeline.folds}
    chosen = [str(f) for f in folds] if folds else list(records)
    missing = [f for f in chosen if f not in records]
    if missing:
        raise MedsegError(f"fold(s) {', '.join(missing)} were not exported", path=folder,
                          fix=f"choose from {', '.join(records)}, or export them")
    config = pipeline.config
    return [OnnxNetwork(open_session(Path(folder) / records[f].file, sha256=records[f].sha256, threads=threads),
                        spatial_dims=config.spatial_dims, in_channels=pipeline.in_channels,
                        num_classes=len(pipeline.label_values), input_name=pipeline.input_name,
                        output_name=pipeline.output_name, batch=pipeline.batch) for f in chosen]


def onnx_predictor(folder: str | Path, *, folds: Sequence[int | str] | None = None, tta: bool = True,
                   step: float | None = None, threads: int | None = None, **options: Any) -> Predictor:
    """A ``Predictor`` of the exported ``folder`` whose networks run in onnxruntime (CPU): the same pipeline as
    ``Predictor.from_folder`` on the source model (mirroring axes, step and post-processing from pipeline.json
    unless given). ``options``: the other ``Predictor`` arguments (``batch_size``, ``memory_limit``, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("exported model folder not found", path=folder, fix="pass the folder medseg export wrote")
    if options.get("device", "cpu") != "cpu":
        raise MedsegError(f"the onnxruntime engine runs on the CPU, not {options['device']}",
                          fix="use --device cpu, or --engine torch for a GPU")
    if options.get("precision", "float32") != "float32":
        raise MedsegError(f"the onnxruntime engine runs the exported float32 networks, not {options['precision']}",
                          fix="use --precision float32, or --engine torch")
    pipeline = read_pipeline(folder)
    networks = onnx_networks(folder, pipeline, [str(f) for f in folds] if folds else None, threads=threads)
    options.setdefault("postprocess_labels", pipeline.postprocess_labels)
    return Predictor(networks, pipeline.config, pipeline.label_values, tta=tta, mirror_axes=pipeline.mirror_axes,
                     step=pipeline.step if step is None else step, **options)


ENGINES = ("torch", "onnxruntime")


def engine_predictor(model: str | Path, engine: str = "torch", **options: Any) -> Predictor:
    """The ``Predictor`` of ``model`` for ``engine``: ``"torch"`` (a model folder, ``Predictor.from_folder``) or
    ``"onnxruntime"`` (a folder that medseg export wrote, ``onnx_predictor``); ``options`` go to either."""
    if engine == "torch":
        return Predictor.from_folder(model, **options)
    if engine == "onnxruntime":
        return onnx_predictor(model, **options)
    raise MedsegError(f"unknown engine {engine!r}", fix=f"use one of {', '.join(ENGINES)}")
