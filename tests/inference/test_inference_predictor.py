"""Predictor: back to the input geometry, streamed == whole, fold and configuration ensembles, 2d on 3D data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.errors import MedsegError
from medseg.inference import EnsemblePredictor, Predictor
from medseg.inference.restore import SlabResampler
from medseg.inference.sliding_window import window_grid
from medseg.io import Image, grid_differences, read_image, write_image


def _case(dataset: Path, index: int = 0) -> Image:
    return read_image(sorted((dataset / "imagesTr").iterdir())[index])


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)],
                                                                     [0, np.sin(0.3), np.cos(0.3)]])


@pytest.mark.parametrize("nearest", [False, True])
def test_slab_resampler_equals_resampling_at_once(nearest: bool) -> None:
    volume = torch.rand(3, 13, 10, 11, generator=torch.Generator().manual_seed(0))
    out_shape = (29, 7, 16)
    whole = SlabResampler(volume.shape[1:], out_shape, nearest_first_axis=nearest).push(0, volume)
    assert len(whole) == 1 and whole[0][1].shape == (3, *out_shape)
    reference = F.interpolate(volume[None], size=out_shape, mode="trilinear", align_corners=False)[0]
    if nearest:  # in-plane bilinear, nearest along the first axis
        plane = F.interpolate(volume.transpose(0, 1), size=out_shape[1:], mode="bilinear", align_corners=False)
        rows = np.minimum(np.floor((np.arange(29) + 0.5) * 13 / 29), 12).astype(int)
        reference = plane.transpose(0, 1)[:, rows]
    torch.testing.assert_close(whole[0][1], reference, rtol=1e-5, atol=1e-6)
    resampler = SlabResampler(volume.shape[1:], out_shape, nearest_first_axis=nearest)
    pieces = []
    for z0, size in [(0, 2), (2, 1), (3, 5), (8, 5)]:
        pieces += resampler.push(z0, volume[:, z0:z0 + size])
    assert [o for o, _ in pieces] == sorted(o for o, _ in pieces) and pieces[0][0] == 0
    assert torch.equal(torch.cat([p for _, p in pieces], 1), whole[0][1])


def test_streamed_prediction_equals_whole_volume(shapes_dataset: Path, shapes_model: Path) -> None:
    image = _case(shapes_dataset)
    # a spacing other than the plan's target makes the prediction resample there and back
    image = Image(image.array[:, :20, :50, :45], (2.5, 1.3, 0.9), image.origin, image.direction)
    whole = Predictor.from_folder(shapes_model, folds=["0"], tta=False)
    streamed = Predictor.from_folder(shapes_model, folds=["0"], tta=False, memory_limit=1)
    labels, probabilities = whole.predict_with_probabilities(image)
    labels_streamed, probabilities_streamed = streamed.predict_with_probabilities(image)
    assert labels.array.shape == (1, 20, 50, 45)
    np.testing.assert_array_equal(labels_streamed.array, labels.array)
    np.testing.assert_allclose(probabilities_streamed.array, probabilities.array, rtol=0, atol=1e-6)
    np.testing.assert_allclose(probabilities.array.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(streamed.predict(image).array, labels.array)
    values = np.unique(labels.array)
    assert set(values) <= {0, 1, 2} and len(values) >= 2


def test_streaming_in_tiles_of_the_plane_equals_whole_volume(shapes_dataset: Path, shapes_model: Path) -> None:
    """A plane several windows wide at memory_limit 1 byte: even the smallest band is over it, so the plane is cut
    into the smallest tiles, each streamed along the first axis on its own (the windows along their borders run
    once per tile), resampled back to its part of the output; every voxel still averages the same windows."""
    source = _case(shapes_dataset)
    array = np.tile(source.array[:, :12], (1, 1, 2, 2))[:, :, :100, :90]
    image = Image(array, (2.5, 1.3, 0.9), source.origin, source.direction)  # resampled there and back
    whole = Predictor.from_folder(shapes_model, folds=["0"], tta=False)
    streamed = Predictor.from_folder(shapes_model, folds=["0"], tta=False, memory_limit=1)
    data, props = streamed._prepared(image, None)
    patch = streamed._window_patch(data.ndim)
    tiles = streamed.plane_tiles(props["shape_after_resample"], props["shape_after_crop"], patch)
    assert len(tiles) > 4 and len(whole.plane_tiles(props["shape_after_resample"], props["shape_after_crop"],
                                                    patch)) == 1
    covered = np.zeros(props["shape_after_crop"][1:], int)  # the tiles' outputs cover the plane once
    for tile in tiles:
        covered[tuple(slice(a, b) for a, b in tile.output)] += 1
    assert (covered == 1).all()
    labels, probabilities = whole.predict_with_probabilities(image)
    labels_tiled, probabilities_tiled = streamed.predict_with_probabilities(image)
    np.testing.assert_allclose(probabilities_tiled.array, probabilities.array, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels_tiled.array, labels.array)
    np.testing.assert_array_equal(streamed.predict(image).array, labels.array)
    assert len(np.unique(labels.array)) >= 2


def test_prediction_has_exactly_the_input_grid(tmp_path: Path, shapes_dataset: Path, shapes_model: Path) -> None:
    source = _case(shapes_dataset, 1)
    image = Image(source.array[:, 2:21], (2.7, 0.85, 1.15), (-12.5, 30.25, 7.0), _rotation(0.4))
    write_image(image, tmp_path / "rotated.nii.gz")
    on_disk = read_image(tmp_path / "rotated.nii.gz")
    predictor = Predictor.from_folder(shapes_model, folds=["0"], tta=False)
    write_image(predictor.predict(on_disk), tmp_path / "out" / "rotated.nii.gz")
    written = read_image(tmp_path / "out" / "rotated.nii.gz")
    assert written.spatial_shape == on_disk.spatial_shape == (19, 64, 64)
    assert written.spacing == on_disk.spacing
    assert written.origin == on_disk.origin
    # NIfTI keeps a rotation as a float32 quaternion: a second round trip moves the cosines by ~1e-8
    np.testing.assert_allclose(written.direction, on_disk.direction, rtol=0, atol=1e-7)
    assert not grid_differences(written, on_disk, tolerance=1e-7)
    assert not np.allclose(on_disk.direction, np.eye(3))


def test_crop_to_nonzero_is_undone(shapes_dataset: Path, shapes_model: Path) -> None:
    image = _case(shapes_dataset)
    padded = np.zeros((1, 30, 70, 75), dtype=np.float32)
    padded[:, 3:27, 4:68, 6:70] = image.array
    big = Image(padded, image.spacing, image.origin, image.direction)
    predictor = Predictor.from_folder(shapes_model, folds=["0"], tta=False)
    inner = predictor.predict(image).array
    outer = predictor.predict(big).array
    assert outer.shape == (1, 30, 70, 75)
    np.testing.assert_array_equal(outer[:, 3:27, 4:68, 6:70], inner)
    assert outer.sum() == inner.sum()  # nothing outside the non-zero crop


def test_folds_average_their_probabilities(shapes_dataset: Path, shapes_model: Path) -> None:
    image = Image(_case(shapes_dataset, 2).array[:, :16], (3.0, 1.0, 1.0), (0, 0, 0), np.eye(3))
    both = Predictor.from_folder(shapes_model, tta=False).predict_with_probabilities(image)[1].array
    one = [Predictor.from_folder(shapes_model, folds=[f], tta=False).predict_with_probabilities(image)[1].array
           for f in ("0", "1")]
    np.testing.assert_allclose(both, (one[0] + one[1]) / 2, atol=2e-6)
    assert np.abs(one[0] - one[1]).max() > 1e-3  # the folds really differ


def test_tta_runs_every_flip_through_the_network(shapes_dataset: Path, shapes_model: Path) -> None:
    image = Image(_case(shapes_dataset).array[:, :16, :48, :40], (3.0, 1.0, 1.0), (0, 0, 0), np.eye(3))
    predictor = Predictor.from_folder(shapes_model, folds=["0"])
    assert predictor.mirror_axes == (0, 1, 2)
    seen = []
    network = predictor.networks[0]
    hook = network.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        with_tta = predictor.predict_with_probabilities(image)[1].array
    finally:
        hook.remove()
    assert sum(seen) == 8  # one window, 2^3 mirrored copies
    without = Predictor.from_folder(shapes_model, folds=["0"], tta=False).predict_with_probabilities(image)[1].array
    assert np.abs(with_tta - without).max() > 1e-4


def test_2d_configuration_segments_a_volume_slice_by_slice(shapes_dataset: Path, shapes_model_2d: Path) -> None:
    image = _case(shapes_dataset)
    predictor = Predictor.from_folder(shapes_model_2d, tta=False, batch_size=4)
    shapes = []
    hook = predictor.networks[0].register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    try:
        labels, probabilities = predictor.predict_with_probabilities(image)
    finally:
        hook.remove()
    assert all(len(s) == 4 for s in shapes) and sum(s[0] for s in shapes) == 24  # 24 slices, one window each
    streamed = Predictor.from_folder(shapes_model_2d, tta=False, batch_size=4, memory_limit=1)
    np.testing.assert_array_equal(streamed.predict(image).array, labels.array)
    # on the network's grid, slice 5 alone gives the same probabilities: no information crosses slices
    data = torch.randn(1, 6, 64, 64, generator=torch.Generator().manual_seed(1))
    alone = predictor.predict_preprocessed(data[:, 5:6])
    torch.testing.assert_close(alone[:, 0], predictor.predict_preprocessed(data)[:, 5], rtol=1e-5, atol=1e-6)


def test_configuration_ensemble_averages_probabilities(shapes_dataset: Path, shapes_model: Path,
                                                       shapes_model_2d: Path) -> None:
    image = Image(_case(shapes_dataset).array[:, :12], (3.0, 1.0, 1.0), (0, 0, 0), np.eye(3))
    members = [Predictor.from_folder(m, folds=["0"], tta=False) for m in (shapes_model, shapes_model_2d)]
    separate = [m.predict_with_probabilities(image)[1].array for m in members]
    labels, probabilities = EnsemblePredictor(members).predict_with_probabilities(image)
    np.testing.assert_allclose(probabilities.array, (separate[0] + separate[1]) / 2, atol=1e-6)
    np.testing.assert_array_equal(labels.array[0], np.argmax(probabilities.array, 0))


def test_wrong_channel_count_is_a_user_error(shapes_dataset: Path, shapes_model: Path) -> None:
    image = _case(shapes_dataset)
    two = image.with_array(np.concatenate([image.array, image.array]))
    with pytest.raises(MedsegError, match="2 channel"):
        Predictor.from_folder(shapes_model, folds=["0"], tta=False).predict(two)


def test_postprocessing_json_is_applied(tmp_path: Path, shapes_dataset: Path, shapes_model: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(shapes_model, model)
    image = _case(shapes_dataset)
    plain = Predictor.from_folder(model, folds=["0"], tta=False).predict(image).array[0]
    (model / "postprocessing.json").write_text(json.dumps({"keep_largest_component": [1, 2]}))
    filtered = Predictor.from_folder(model, folds=["0"], tta=False).predict(image).array[0]
    import cc3d

    for value in (1, 2):
        assert cc3d.connected_components(filtered == value, connectivity=26).max() <= 1
    assert np.all((filtered == plain) | (filtered == 0))


def test_missing_model_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="model folder not found"):
        Predictor.from_folder(tmp_path / "nope")


def test_forward_chunk_is_tuned_on_the_first_windows(shapes_dataset: Path, shapes_model: Path) -> None:
    """A forward whose cost per call is set by its batch size (a sleep that dwarfs the tiny network): chunk 2 is
    the fastest per window, so the search tries 4, then 2 (faster: go on), then 1 (slower: stop) and keeps 2."""
    import time

    predictor = Predictor.from_folder(shapes_model, folds=["0"], mirror_axes=[1, 2], forward_memory=10**9)
    assert predictor._chunk_trials == [4, 2, 1]  # 4 mirrored copies of one window, largest first
    sizes = []
    seconds_per_call = {4: 0.2, 2: 0.05, 1: 0.1}  # per window: 0.2, 0.1, 0.4

    def slow_forward(module, args):
        sizes.append(args[0].shape[0])
        time.sleep(seconds_per_call[args[0].shape[0]])

    hook = predictor.networks[0].register_forward_pre_hook(slow_forward)
    data = torch.randn(1, 16, 96, 80, generator=torch.Generator().manual_seed(2))
    windows = len(window_grid(data.shape[1:], predictor.patch_size))
    assert windows == 9
    try:
        predictor.predict_preprocessed(data)
    finally:
        hook.remove()
    assert sorted(predictor._chunk_times) == [1, 2, 4]
    assert sizes[:2] == [4, 4] and sizes[2:4] == [2, 2] and sizes[4:8] == [1, 1, 1, 1]  # warm-up, then trials
    assert set(sizes[8:]) == {2}
    assert sum(sizes) == 4 * windows


def test_forward_chunk_search_stops_when_a_smaller_chunk_is_slower(shapes_model: Path) -> None:
    predictor = Predictor.from_folder(shapes_model, folds=["0"], mirror_axes=[1, 2], forward_memory=10**9)
    predictor._calls = 1
    predictor._chunk_times = {4: 1.0}
    assert predictor._forward_chunk() == 2
    predictor._chunk_times = {4: 1.0, 2: 1.5}  # 2 lost to 4: 1 is never tried
    assert predictor._forward_chunk() == 4
