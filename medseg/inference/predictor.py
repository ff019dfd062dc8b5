"""``Predictor``: a trained model folder -> label maps in the input image's own geometry.

Per image: crop to content, normalise and resample as in training (``preprocess_arrays``); sliding window
(Gaussian weights, step 0.5) with mirroring TTA over every fold's network, averaging the folds' softmax; resample
the probabilities back to the cropped grid; argmax; channel ``i`` -> ``label_values[i]``; paste into a label map of
the input's full shape; optional post-processing (largest component per class) where the model folder's
``postprocessing.json`` says it helped in cross-validation.

Memory: when the whole-volume accumulator ``(K + 1, *S)`` would exceed ``memory_limit`` bytes, the volume is
streamed in slabs along the first axis (``sliding_window_slabs``): each finished slab is resampled, argmaxed and
written into the uint8/uint16 output, so peak memory is the input, its preprocessed copy, the output label map and
one patch-deep band of probabilities, whatever the volume's length. When that band of the whole plane would still
pass the limit (many classes), the plane is cut into tiles streamed one after another (``tiles.plane_tiles``;
windows along tile borders run once per tile), so the band stays within the limit however many classes there are,
down to tiles one or two windows across. Asking for the probabilities (``predict_with_probabilities``) holds them
for the whole image, as the caller asked.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from medseg.config import Configuration
from medseg.config.calibration import CalibrationSpec, read_calibration
from medseg.errors import MedsegError
from medseg.inference.calibrated import apply_calibration
from medseg.inference.postprocess import keep_largest_component, read_postprocessing
from medseg.inference.restore import SlabResampler, Start, bytes_of, full_region, label_lookup, paste_labels
from medseg.inference.sliding_window import SLAB_ROWS, PredictFn, sliding_window, sliding_window_slabs
from medseg.inference.tiles import Tile, plane_tiles, whole_plane
from medseg.inference.tta import mirrored
from medseg.inference.voxelwise_input import VoxelwiseInput
from medseg.io import Image
from medseg.nets.memory import inference_activation_bytes

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT = 2 * 1024 ** 3
DEFAULT_FORWARD_MEMORY = 1024 ** 3
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def network_in_channels(network: torch.nn.Module) -> int | None:
    """The input channels a network was built for (``nets.create`` records them), or None if unknown."""
    spec = getattr(network, "medseg_spec", None) or getattr(network, "config", None)
    if isinstance(spec, dict) and spec.get("in_channels"):
        return int(spec["in_channels"])
    return None


class Predictor:
    """Predict label maps with one configuration's networks (one per fold, their softmax averaged).

    Args:
        networks: trained networks in eval mode, ``(B, C, *patch)`` -> logits ``(B, K, *patch)``.
        config: the plan's configuration they were trained with (patch, spacing, normalisation, resampling).
        label_values: output channel ``i`` predicts ``label_values[i]``.
        tta: mirror over every spatial axis of the network (``2 ** d`` passes) or only ``mirror_axes``.
        step: window stride as a fraction of the patch.
        batch_size: windows per batch. Their mirrored copies go through the network in chunks of ..., 4, 2, 1
            samples (at most what fits ``forward_memory`` bytes of activations); the chunk size is timed on the
            first window batches, largest first, and the fastest kept (see ``_forward_chunk``).
        memory_limit: bytes the whole-volume accumulator may take before prediction streams in slabs; streamed, the
            bytes of the band of every output channel (the plane cut into tiles to fit, see ``plane_tiles``).
        accumulate_dtype: float32 or float16 accumulator.
        postprocess_labels: labels whose largest connected component alone is kept.
        precision: ``"float32"`` (default), or ``"bfloat16"`` / ``"float16"`` for the network under autocast (about
            2x faster on CPUs with native bfloat16, e.g. AVX512-BF16 or AMX; argmax agrees on ~99.5% of voxels).
        previous_stage: for a cascade configuration (``config.previous_stage``), the first stage's predictor: its
            label map of the image joins the input as one-hot channels of the foreground labels (or pass
            ``previous`` to ``predict``, e.g. a cross-validation prediction).
        calibration: a ``CalibrationSpec`` applied to the fold-averaged probabilities of every window
            (``from_folder`` reads the model folder's ``calibration.json``; ``calibration=None`` there skips it).
    """

    def __init__(self, networks: Sequence[torch.nn.Module], config: Configuration, label_values: Sequence[int], *,
                 tta: bool = True, mirror_axes: Sequence[int] | None = None, step: float = 0.5, batch_size: int = 1,
                 device: str = "cpu", memory_limit: int = DEFAULT_MEMORY_LIMIT,
                 forward_memory: int = DEFAULT_FORWARD_MEMORY, accumulate_dtype: torch.dtype = torch.float32,
                 postprocess_labels: Sequence[int] = (), precision: str = "float32",
                 previous_stage: "Predictor | None" = None, calibration: CalibrationSpec | None = None):
        if not networks:
            raise MedsegError("no networks to predict with", fix="pass at least one fold")
        self.networks = list(networks)
        self.config = config
        self.label_values = [int(v) for v in label_values]
        self.spatial_dims = int(config.spatial_dims)
        self.patch_size = [int(p) for p in config.patch_size]
        axes = range(self.spatial_dims) if mirror_axes is None else mirror_axes
        self.mirror_axes = tuple(sorted(set(int(a) for a in axes))) if tta else ()
        self.step, self.batch_size, self.device = float(step), int(batch_size), device
        self.memory_limit, self.accumulate_dtype = int(memory_limit), accumulate_dtype
        self.postprocess_labels = [int(v) for v in postprocess_labels]
        if precision not in PRECISIONS:
            raise MedsegError(f"unknown precision {precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.in_channels = network_in_channels(self.networks[0])
        self.slice_context = int(config.slice_context)  # 2.5D: neighbouring slices as input channels
        self.instances = bool(config.instances)  # an instance model: its last output is a distance map
        self.previous_stage = previous_stage
        self.calibration = calibration
        self.previous_labels = self.label_values[1:] if config.previous_stage else []  # one channel each
        if previous_stage is not None and list(previous_stage.label_values) != self.label_values:
            raise MedsegError(f"the first stage predicts labels {previous_stage.label_values}, this model "
                              f"{self.label_values}", fix="use the first stage trained on the same dataset")
        # the network says what one window costs: its peak live activations, measured on the meta device
        per_sample = inference_activation_bytes(self.networks[0], (1, self.in_channels or 1, *self.patch_size))
        self.max_forward_batch = max(1, int(forward_memory) // max(per_sample, 1))
        copies = self.batch_size * 2 ** len(self.mirror_axes)
        limit = min(copies, self.max_forward_batch)
        self._chunk_trials = [c for c in (32, 16, 8, 4, 2, 1) if c <= limit]  # largest first
        self._chunk_times: dict[int, float] = {}
        self._calls = 0

    def _forward_chunk(self) -> int:
        """Samples per network call, tuned on the first window batches: after one warm-up call at the largest
        chunk, chunks are timed from the largest down, one window batch each, for as long as each smaller chunk
        beats every larger one; then the fastest is kept. Small networks gain from large batches on a CPU (their
        search stops after two trials), wide ones do not (the search goes on down to 1)."""
        if self._calls == 0:
            return self._chunk_trials[0]
        timed = self._chunk_trials[:len(self._chunk_times)]  # tried in order, so a prefix
        best = min(self._chunk_times, key=self._chunk_times.get) if self._chunk_times else None
        if len(timed) < len(self._chunk_trials) and (not timed or timed[-1] == best):
            return self._chunk_trials[len(timed)]
        return best

    @classmethod
    def from_folder(cls, model: str | Path, *, folds: Sequence[int | str] | None = None, device: str = "cpu",
                    tta: bool = True, **options) -> "Predictor":
        """Load ``model``'s folds (default: every fold with weights) and its post-processing decision."""
        from medseg.config.model_folder import available_folds, read_segmentation_model
        from medseg.devices import require_device
        from medseg.nets.from_folder import load_network

        model = Path(model)
        if not model.is_dir():
            raise MedsegError("model folder not found", path=model, fix="pass the folder that medseg train wrote")
        require_device(device)
        spec, plan, _ = read_segmentation_model(model)
        if spec.configuration not in plan.configurations:
            raise MedsegError(f"configuration {spec.configuration!r} is not in plans.json", path=model,
                              fix="the model folder is inconsistent; retrain")
        chosen = [str(f) for f in folds] if folds else available_folds(model)
        if not chosen:
            raise MedsegError("no fold has weights", path=model, fix="train at least one fold first")
        networks = [load_network(model, fold, device=device, spec=spec) for fold in chosen]
        config = plan.configurations[spec.configuration]
        previous = None
        if config.previous_stage:
            from medseg.config.model_folder import previous_stage_folder

            shared = {k: v for k, v in options.items() if k not in ("postprocess_labels", "calibration")}
            previous = cls.from_folder(previous_stage_folder(model, spec), device=device, tta=tta, **shared)
        options.setdefault("postprocess_labels", read_postprocessing(model))
        options.setdefault("calibration", read_calibration(model, spec.label_values))
        return cls(networks, config, spec.label_values, tta=tta, device=device, previous_stage=previous, **options)

    @property
    def num_classes(self) -> int:
        return len(self.label_values)

    def network_input(self, patches: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Windows ``(B, C, *patch)`` as the network takes them, and whether they were 3D windows of a 2D network
        (``(B, C, 1 + 2h, Y, X)`` -> ``(B, C * (1 + 2h), Y, X)``, channel-major as in training; h = 0 for 2d)."""
        if patches.ndim - 2 <= self.spatial_dims:
            return patches, False
        return patches.reshape(patches.shape[0], -1, *patches.shape[3:]), True

    def window_predict(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, C, *patch)`` -> softmax ``(B, K, *patch)`` averaged over mirrored copies (logits) and folds; for a
        2D network on a 3D volume the windows are ``(B, C, 1 + 2h, Y, X)`` and the output ``(B, K, 1, Y, X)``."""
        x, squeeze = self.network_input(patches)
        total = None
        chunk = self._forward_chunk()
        start = time.perf_counter()
        for network in self.networks:
            with torch.autocast(torch.device(self.device).type, dtype=PRECISIONS[self.precision],
                                enabled=self.precision != "float32"):
                logits = mirrored(network, self.mirror_axes, max_batch=chunk)(x)
            probabilities = self._activate(logits.float())
            total = probabilities if total is None else total.add_(probabilities)
        assert total is not None
        if self._calls > 0 and chunk not in self._chunk_times and len(patches) == self.batch_size:
            self._chunk_times[chunk] = time.perf_counter() - start
        self._calls += 1
        total /= len(self.networks)
        if self.calibration is not None:
            k = self.num_classes
            total = torch.cat([apply_calibration(total[:, :k], self.calibration), total[:, k:]], 1)
        return total[:, :, None] if squeeze else total

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes; an instance model's distance channel (last) through a sigmoid."""
        if not self.instances:  # in place: the logits are this call's own (one copy per class less in memory)
            return torch.softmax(logits, 1, out=logits)
        return torch.cat([torch.softmax(logits[:, :-1], 1), torch.sigmoid(logits[:, -1:])], 1)

    def _window_patch(self, data_ndim: int) -> list[int]:
        return [1, *self.patch_size] if data_ndim - 1 > self.spatial_dims else list(self.patch_size)

    def _window_options(self, data_ndim: int) -> dict:
        context = self.slice_context if data_ndim - 1 > self.spatial_dims else 0
        return dict(step=self.step, batch_size=self.batch_size, accumulate_dtype=self.accumulate_dtype,
                    device=self.device, context=context)

    def predict_preprocessed(self, data: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(K, *S)`` float32 on the network's grid for a preprocessed ``(C, *S)`` tensor."""
        return sliding_window(self.window_predict, data, self._window_patch(data.ndim),
                              **self._window_options(data.ndim))

    def check_image(self, image: Image) -> None:
        """A MedsegError when ``image (C, *spatial)`` cannot be predicted by this model (channel count, number of
        spatial dimensions); ``predict`` makes the same check, ``run.check_inputs`` makes it before any write."""
        if self.slice_context and image.ndim != 3:
            raise MedsegError(f"a {image.ndim}D image for a 2.5D model (neighbouring slices as channels)",
                              fix="use a model trained on 2D images for 2D images")
        expected = None if self.in_channels is None else \
            (self.in_channels - len(self.previous_labels)) // (1 + 2 * self.slice_context)
        if expected is not None and image.num_channels != expected:
            sources = image.metadata.get("source_files") or []
            raise MedsegError(f"the image has {image.num_channels} channel(s), the model expects {expected}",
                              path=", ".join(map(str, sources)) or None,
                              fix="pass one file per channel (<case>_0000, <case>_0001, ...) in the training order")
        if image.ndim < self.spatial_dims:
            raise MedsegError(f"a {image.ndim}D image for a {self.spatial_dims}D model",
                              fix="use a model trained on images of this dimension")
        if image.ndim > self.spatial_dims + 1 or (image.ndim > self.spatial_dims and image.ndim != 3):
            raise MedsegError(f"a {image.ndim}D image for a {self.spatial_dims}D model", fix="check the input")

    def previous_stage_labels(self, image: Image, previous: np.ndarray | None = None) -> np.ndarray | None:
        """A cascade's first-stage label map ``(1, *spatial)`` of ``image``: ``previous`` when given, else what
        ``previous_stage`` predicts; None for a single-stage model."""
        if not self.config.previous_stage:
            return None
        if previous is not None:
            return np.asarray(previous)
        if self.previous_stage is None:
            raise MedsegError(f"{self.config.name} needs the {self.config.previous_stage} stage's prediction",
                              fix="load the model with Predictor.from_folder, or pass previous_stage=")
        return self.previous_stage.predict(image).array

    def _probability_slabs(self, image: Image, previous: np.ndarray | None = None, *,
                           window_predict: PredictFn | None = None, keep_distance: bool = False
                           ) -> tuple[Iterator[tuple[Start, torch.Tensor]], list[list[int]]]:
        """Probabilities on the cropped input grid, ``(start, (K, *block))`` slab by slab along the first axis (tile
        by tile of the plane when streamed with tiles; ``start`` per spatial axis, in the crop); and the crop box.
        ``window_predict``: another per-window function than ``self.window_predict`` (its channels restored
        the same way, e.g. ``medseg.trust.uncertainty``'s member statistics). An instance model's distance
        channel is dropped unless ``keep_distance`` (then it is the slabs' last channel)."""
        data, props = self._prepared(image, previous)
        return self._restored_slabs(data, props, window_predict=window_predict, keep_distance=keep_distance)

    def _prepared(self, image: Image, previous: np.ndarray | None) -> tuple[torch.Tensor | VoxelwiseInput, dict]:
        """``image`` preprocessed as in training: ``(C, *S)`` on the network's grid and its properties. Where that
        is voxel-wise (no resampling, no masked z-score, no cascade channels) and the volume is at least a window
        on every axis, a ``VoxelwiseInput`` that normalises each window as it is read (the same values, with no
        whole float32 copy beside the input); else the preprocessed tensor."""
        from medseg.preprocess.pipeline import preprocess_arrays, voxelwise_prediction_input

        self.check_image(image)
        if not self.config.previous_stage:
            voxelwise = voxelwise_prediction_input(image.array, list(image.spacing), self.config)
            if voxelwise is not None:
                cropped, transforms, props = voxelwise
                if all(s >= p for s, p in zip(cropped.shape[1:], self._window_patch(cropped.ndim))):
                    return VoxelwiseInput(cropped, transforms), props
        prepared = preprocess_arrays(image.array, None, list(image.spacing), self.config,
                                     previous=self.previous_stage_labels(image, previous),
                                     previous_labels=self.previous_labels)
        del prepared.seg
        return torch.from_numpy(prepared.data), prepared.properties

    def _restored_slabs(self, data: torch.Tensor | VoxelwiseInput, props: dict, *,
                        window_predict: PredictFn | None = None, keep_distance: bool = False
                        ) -> tuple[Iterator[tuple[Start, torch.Tensor]], list[list[int]]]:
        """``_probability_slabs`` of preprocessed ``data``."""
        window = window_predict or self.window_predict
        patch = self._window_patch(data.ndim)
        options = self._window_options(data.ndim)
        shape_in, shape_out = props["shape_after_resample"], props["shape_after_crop"]
        streamed = self._accumulator_bytes(data.shape[1:]) > self.memory_limit
        tiles = self.plane_tiles(shape_in, shape_out, patch) if streamed else \
            [whole_plane(shape_in, shape_out, patch, self.step)]
        if streamed:
            logger.info("streaming: the accumulator would take %.2f GB (> limit %.2f GB); %d tile(s) of the plane",
                        self._accumulator_bytes(data.shape[1:]) / 1e9, self.memory_limit / 1e9, len(tiles))
        nearest = bool(self.config.resampling.get("separate_z", False)) and \
            int(self.config.resampling.get("z_order", 0)) == 0
        drop = self.instances and not keep_distance and window_predict is None

        def slabs(tile: Tile) -> Iterator[tuple[int, torch.Tensor]]:
            if streamed:
                return sliding_window_slabs(window, data, patch, tile=tile.windows, **options)
            return iter([(0, sliding_window(window, data, patch, **options))])

        def restored() -> Iterator[tuple[Start, torch.Tensor]]:
            for tile in tiles:
                resampler = SlabResampler(shape_in, shape_out, nearest_first_axis=nearest, output=tile.output,
                                          source_start=tile.source_start)
                plane = tuple(a for a, _ in tile.output)
                for z0, slab in slabs(tile):
                    for start, part in resampler.push(z0, slab):
                        yield (start, *plane), part[:-1] if drop else part

        return restored(), props["crop_bbox"]

    def predict(self, image: Image, previous: np.ndarray | None = None) -> Image:
        """Label map ``(1, *spatial)`` on exactly ``image``'s grid (shape, spacing, origin, direction);
        ``previous``: a cascade's first-stage labels ``(1, *spatial)`` (default: ``previous_stage`` predicts)."""
        slabs, bbox = self._probability_slabs(image, previous)
        lookup, dtype = label_lookup(self.label_values)
        labels = np.zeros(image.spatial_shape, dtype=dtype)
        paste_labels(slabs, lookup, labels, bbox)
        return self._finish(image, labels)

    def _accumulator_bytes(self, shape: Sequence[int]) -> int:
        """Bytes of the accumulator (every output channel and the weight sum) over spatial ``shape``: above
        ``memory_limit`` for the whole volume, the volume is streamed."""
        return bytes_of((self.num_classes + 1 + int(self.instances), *shape), self.accumulate_dtype)

    def plane_tiles(self, shape_in: Sequence[int], shape_out: Sequence[int], patch: Sequence[int]) -> list[Tile]:
        """The tiles of the plane that streaming a preprocessed image of spatial ``shape_in`` (``shape_out`` on the
        cropped input grid) takes with windows ``patch``: as few window runs as keep the working set within
        ``memory_limit`` (one tile when the whole plane fits). The working set of every output channel: the band
        (a patch deep, and the weight sum), one slab of it normalised, and one window batch's output with its
        mirrored copies (what the network returns, before they are averaged)."""
        channels = self.num_classes + int(self.instances)
        voxel = int(patch[0]) * self._accumulator_bytes((1,)) + SLAB_ROWS * bytes_of((channels,))
        # mirrored copies are flipped back and stacked before their mean: about three sets of them at once
        copies = self.batch_size * (3 * 2 ** len(self.mirror_axes) if self.mirror_axes else 1)
        window = bytes_of((copies, channels, *patch))
        return plane_tiles(shape_in, shape_out, patch, self.step, voxel_bytes=voxel, fixed_bytes=window,
                           limit=self.memory_limit)

    def predict_with_probabilities(self, image: Image, previous: np.ndarray | None = None) -> tuple[Image, Image]:
        """Label map ``(1, *spatial)`` and class probabilities ``(K, *spatial)`` float32 on ``image``'s grid
        (outside the content crop: background probability 1); ``previous`` as for ``predict``."""
        slabs, bbox = self._probability_slabs(image, previous)
        probabilities = np.zeros((self.num_classes, *image.spatial_shape), dtype=np.float32)
        probabilities[0] = 1.0
        lookup, dtype = label_lookup(self.label_values)
        labels = np.zeros(image.spatial_shape, dtype=dtype)
        paste_labels(_kept(slabs, bbox, probabilities, slice(None)), lookup, labels, bbox)
        return self._finish(image, labels), image.with_array(probabilities)

    def predict_instances(self, image: Image, previous: np.ndarray | None = None) -> tuple[Image, Image]:
        """An instance model's label map and instance map ``(1, *spatial)`` uint16/32 (0 background, objects 1..n)
        on ``image``'s grid: the predicted foreground split by a marker watershed of the predicted distance map
        (``medseg.transforms.instance_distance``)."""
        labels, objects, _ = self._instances(image, previous, probabilities=False)
        return labels, objects

    def predict_instances_with_probabilities(self, image: Image, previous: np.ndarray | None = None
                                             ) -> tuple[Image, Image, Image]:
        """``predict_instances``'s two maps and the class probabilities ``(K, *spatial)`` float32 of
        ``predict_with_probabilities``, from one sliding-window pass."""
        labels, objects, probabilities = self._instances(image, previous, probabilities=True)
        assert probabilities is not None
        return labels, objects, probabilities

    def _instances(self, image: Image, previous: np.ndarray | None, *, probabilities: bool
                   ) -> tuple[Image, Image, Image | None]:
        from medseg.transforms.instance_distance import instances_from_distance

        if not self.instances:
            raise MedsegError(f"configuration {self.config.name} has no distance-map head",
                              fix="train the instance configuration (medseg plan --instances)")
        slabs, bbox = self._probability_slabs(image, previous, keep_distance=True)
        distance = np.zeros((1, *image.spatial_shape), dtype=np.float32)
        classes = _kept(slabs, bbox, distance, slice(-1, None), slice(None, -1))
        kept = None
        if probabilities:
            kept = np.zeros((self.num_classes, *image.spatial_shape), dtype=np.float32)
            kept[0] = 1.0
            classes = _kept(classes, bbox, kept, slice(None))
        lookup, dtype = label_lookup(self.label_values)
        labels = np.zeros(image.spatial_shape, dtype=dtype)
        paste_labels(classes, lookup, labels, bbox)
        finished = self._finish(image, labels)
        objects = instances_from_distance(finished.array[0] != 0, distance[0])
        return finished, image.with_array(objects[None]), image.with_array(kept) if kept is not None else None

    @property
    def latent_dim(self) -> int:
        """A probabilistic model's latent size (its networks take ``latent_noise``); 0 for any other model."""
        return int(getattr(self.networks[0], "latent_dim", 0)) if hasattr(self.networks[0], "latent_noise") else 0

    def predict_samples(self, image: Image, count: int, *, seed: int = 0, previous: np.ndarray | None = None
                        ) -> list[Image]:
        """``count`` plausible label maps ``(1, *spatial)`` of a probabilistic model, each on ``image``'s grid:
        sample ``k`` predicts at the latent ``prior mean + prior std * e_k`` with ``e_k`` the ``k``-th standard
        normal draw of ``seed`` (the same for every window, mirrored copy and fold of the image, so the sample is
        one coherent segmentation). ``predict`` gives the prior mean's."""
        if not self.latent_dim:
            raise MedsegError(f"configuration {self.config.name} is not probabilistic: it has one prediction",
                              fix="train the probabilistic configuration (a dataset with labelsTr/<case>_r<K>)")
        if count < 1:
            raise MedsegError(f"{count} samples", fix="ask for 1 or more samples")
        generator = torch.Generator().manual_seed(int(seed))
        samples = []
        try:
            for _ in range(count):
                noise = torch.randn(self.latent_dim, generator=generator)
                for network in self.networks:
                    network.latent_noise = noise
                samples.append(self.predict(image, previous))
        finally:
            for network in self.networks:
                network.latent_noise = None
        return samples

    def _finish(self, image: Image, labels: np.ndarray) -> Image:
        if self.postprocess_labels:
            labels = keep_largest_component(labels, self.postprocess_labels)
        return image.with_array(labels[None])


def _kept(slabs: Iterator[tuple[Start, torch.Tensor]], bbox: list[list[int]], target: np.ndarray, kept: slice,
          passed: slice = slice(None)) -> Iterator[tuple[Start, torch.Tensor]]:
    """Pass the slabs ``(start, (K, *block))`` on (their ``passed`` channels) after writing their ``kept`` channels
    into ``target`` ``(k, *spatial)``, the full image, at ``start`` inside the content crop ``bbox``."""
    for start, slab in slabs:
        target[(slice(None), *full_region(bbox, start, slab.shape[1:]))] = slab[kept].numpy()
        yield start, slab[passed]
