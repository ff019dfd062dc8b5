"""AugmentationConfig: the training augmentation a plan carries, with nnU-Net v2's default probabilities and ranges.

Every probability is "per sample" (one draw per patch in the batch) unless its name says ``per_channel``.
Ranges are ``(low, high)`` pairs sampled uniformly; brightness, contrast and gamma use nnU-Net's
``BGContrast`` rule (half the time below 1, half the time above 1) so that darkening and brightening are
equally likely although the range is asymmetric around 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Sequence

from medseg.errors import MedsegError

SCHEMA_VERSION = 1
ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's ANISO_THRESHOLD: patch edge ratio above which 3D rotation is in-plane only
LABEL_MODES = ("linear", "nearest")


@dataclass
class AugmentationConfig:
    """Probabilities and ranges of the on-the-fly augmentation (defaults: nnU-Net v2 ``nnUNetTrainer``).

    Spatial (one sampling grid per patch, image and label resampled with the same grid):
      ``rotation_degrees``: angles per rotation axis, uniform in the range; ``scaling_range``: one factor for
      all axes (nnU-Net synchronises them), >1 samples a larger region, so objects get smaller;
      ``elastic_sigma``: smoothness of the displacement field as a fraction of the patch edge;
      ``elastic_magnitude``: its largest displacement as a fraction of the patch edge (nnU-Net ships elastic
      deformation switched off, ``p_elastic=0``); ``in_plane_only``: for strongly anisotropic 3D patches
      rotate and scale only in the (y, x) plane and never resample across z (nnU-Net's "dummy 2D").
    Intensity (after the spatial transform, in this order): Gaussian noise (``noise_std`` is a standard
    deviation; nnU-Net calls the same numbers "variance" but uses them as std), Gaussian blur (sigma in
    voxels, per axis), multiplicative brightness, contrast (range preserved), low-resolution simulation
    (nearest down-sampling by ``low_resolution_scale``, linear up-sampling), inverted gamma, gamma
    (both retain mean and std), then mirroring (each axis in ``mirror_axes`` flipped with probability 0.5).
    ``zero_outside_mask`` sets the image to 0 where the cached label is -1 (outside the crop mask), as nnU-Net
    does for datasets normalised inside a mask. ``label_interpolation``: ``"linear"`` resamples the one-hot
    label map linearly and takes the arg-max (nnU-Net's choice, smooth boundaries), ``"nearest"`` is faster.
    Cascade: ``intensity_channels`` (None: all) is how many leading channels are image channels that take the
    intensity chain; the others are a previous stage's one-hot prediction, warped and mirrored only, binarised,
    and changed by random morphology with ``p_previous_stage_morphology`` (``medseg.transforms.cascade``).
    2.5D: ``slice_stack`` k > 1 says the image channels are k neighbouring slices of each image channel
    (channel-major); the intensity chain then draws its parameters once per image channel and applies them to
    its k slices alike (laid side by side along the first patch axis for it, so statistics span the stack and a
    blur may mix a few rows where two slices meet). ``target_channels``: that many last channels are training
    targets that travel with the image (an instance head's distance map): warped and mirrored, nothing else.
    """

    p_rotation: float = 0.2
    rotation_degrees: tuple[float, float] = (-30.0, 30.0)
    p_scaling: float = 0.2
    scaling_range: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.0
    elastic_sigma: tuple[float, float] = (0.05, 0.2)
    elastic_magnitude: tuple[float, float] = (0.0, 0.05)
    in_plane_only: bool = False
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_p_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_scale: tuple[float, float] = (0.5, 1.0)
    low_resolution_p_per_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    zero_outside_mask: bool = False
    label_interpolation: str = "linear"
    intensity_channels: int | None = None
    p_previous_stage_morphology: float = 0.0
    slice_stack: int = 1
    target_channels: int = 0
    previous_stage_morphology_radius: tuple[int, int] = (1, 8)
    schema_version: int = field(default=SCHEMA_VERSION)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        for f in fields(self):
            if f.name.startswith("p_") or f.name.endswith("_p_per_channel"):
                _check(0.0 <= getattr(self, f.name) <= 1.0, f.name, getattr(self, f.name), "a probability in [0, 1]")
        for name in ("rotation_degrees", "scaling_range", "elastic_sigma", "elastic_magnitude", "noise_std",
                     "blur_sigma", "brightness_range", "contrast_range", "low_resolution_scale", "gamma_range"):
            low, high = getattr(self, name)
            _check(low <= high, name, (low, high), "a (low, high) pair with low <= high")
        _check(self.scaling_range[0] > 0, "scaling_range", self.scaling_range, "positive factors")
        _check(self.low_resolution_scale[0] > 0, "low_resolution_scale", self.low_resolution_scale, "factors in (0, 1]")
        _check(self.intensity_channels is None or self.intensity_channels >= 0, "intensity_channels",
               self.intensity_channels, "None or a channel count >= 0")
        _check(self.slice_stack >= 1, "slice_stack", self.slice_stack, "a slice count >= 1")
        _check(self.target_channels >= 0, "target_channels", self.target_channels, "a channel count >= 0")
        _check(1 <= self.previous_stage_morphology_radius[0] <= self.previous_stage_morphology_radius[1],
               "previous_stage_morphology_radius", self.previous_stage_morphology_radius, "radii 1 <= low <= high")
        _check(self.label_interpolation in LABEL_MODES, "label_interpolation", self.label_interpolation,
               f"one of {LABEL_MODES}")

    @classmethod
    def for_patch(cls, patch_size: Sequence[int], **overrides: Any) -> "AugmentationConfig":
        """nnU-Net v2's choices for a patch ``(Y, X)`` or ``(Z, Y, X)``: rotation range, mirror axes, dummy 2D.

        2D: +-180 degrees unless the patch is elongated (edge ratio > 1.5: +-15). 3D: +-30 degrees about every
        axis, or in-plane only with +-180 degrees when ``max(patch) / patch[0] > 3`` (few, thick slices).
        """
        patch = [int(p) for p in patch_size]
        if len(patch) == 2:
            degrees = 15.0 if max(patch) / min(patch) > 1.5 else 180.0
            base = dict(rotation_degrees=(-degrees, degrees), mirror_axes=(0, 1), in_plane_only=False)
        elif len(patch) == 3:
            in_plane = max(patch) / patch[0] > ANISOTROPY_THRESHOLD
            degrees = 180.0 if in_plane else 30.0
            base = dict(rotation_degrees=(-degrees, degrees), mirror_axes=(0, 1, 2), in_plane_only=in_plane)
        else:
            raise MedsegError(f"patch size {patch} must have 2 or 3 spatial axes", fix="pass (Y, X) or (Z, Y, X)")
        return cls(**{**base, **overrides})

    @classmethod
    def disabled(cls) -> "AugmentationConfig":
        """No augmentation at all: patches are plain crops (validation, or measuring the sampler alone)."""
        zeros = {f.name: 0.0 for f in fields(cls) if f.name.startswith("p_")}
        return cls(**zeros, mirror_axes=())

    def with_changes(self, **changes: Any) -> "AugmentationConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AugmentationConfig":
        version = data.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise MedsegError(f"augmentation schema_version {version} is newer than this medseg ({SCHEMA_VERSION})",
                              fix="upgrade medseg")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MedsegError(f"unknown augmentation settings {unknown}", fix=f"use only {sorted(known)}")
        return cls(**data)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise MedsegError(f"augmentation setting {name}={value!r} is invalid", fix=f"use {expected}")
