"""Sliding window, Gaussian importance map, padding, streaming in slabs and mirroring TTA."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.inference.sliding_window import (MIN_WEIGHT, gaussian_importance_map, sliding_window,
                                             sliding_window_slabs, window_grid, window_starts)
from medseg.inference.tta import flip_combinations, mirrored


def _conv_net(in_channels: int, out_channels: int, dims: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = (torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d)(in_channels, out_channels, 3, padding=1)
    return torch.nn.Sequential(conv, torch.nn.Tanh()).eval()


@pytest.mark.parametrize("size,patch", [(10, 4), (64, 16), (17, 16), (16, 16), (5, 1), (100, 7)])
def test_window_starts_cover_the_axis_with_at_most_half_a_patch_stride(size: int, patch: int) -> None:
    starts = window_starts(size, patch, 0.5)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert all(b - a <= max(1, math.ceil(patch * 0.5)) for a, b in zip(starts, starts[1:]))  # rounded positions
    assert starts == sorted(set(starts))
    expected = 1 if size == patch else math.ceil((size - patch) / max(1.0, patch * 0.5)) + 1
    assert len(starts) == expected


def test_gaussian_map_is_centred_normalised_and_floored() -> None:
    weights = gaussian_importance_map((16, 24, 9))
    assert weights.shape == (16, 24, 9) and weights.dtype == torch.float32
    assert weights.max().item() == pytest.approx(1.0, abs=1e-3)
    assert weights.min().item() == pytest.approx(MIN_WEIGHT)
    for axis in range(3):
        assert torch.equal(weights, weights.flip(axis))  # symmetric about the patch centre
    # sigma = patch / 8 along each axis: one sigma away from the centre the weight is exp(-1/2) of the centre's
    line = gaussian_importance_map((64,)).double()
    x = torch.arange(64, dtype=torch.float64) - 31.5
    expected = torch.exp(-0.5 * (x / 8.0) ** 2)
    torch.testing.assert_close(line, (expected / expected.max()).clamp_min(MIN_WEIGHT), rtol=1e-6, atol=1e-7)
    assert gaussian_importance_map((16, 16))[0, 7].item() == pytest.approx(math.exp(-0.5 * (7.5 / 2) ** 2) /
                                                                            math.exp(-0.5 * (0.5 / 2) ** 2), rel=1e-5)


@pytest.mark.parametrize("shape,patch", [((2, 20, 33, 27), (8, 16, 12)), ((1, 50, 41), (16, 16))])
def test_identity_and_linear_networks_reproduce_the_input(shape, patch) -> None:
    image = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = sliding_window(lambda x: x, image, patch, batch_size=3)
    assert out.shape == image.shape
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-6)
    mix = torch.randn(3, shape[0], generator=torch.Generator().manual_seed(1))
    linear = sliding_window(lambda x: torch.einsum("kc,bc...->bk...", mix, x) + 1.0, image, patch)
    torch.testing.assert_close(linear, torch.einsum("kc,c...->k...", mix, image) + 1.0, rtol=1e-5, atol=1e-5)


def test_images_smaller_than_the_patch_are_padded_and_cropped_back() -> None:
    image = torch.randn(1, 5, 30, 7, generator=torch.Generator().manual_seed(2))
    seen = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[2:]))
        return x * 2

    out = sliding_window(predict, image, (8, 16, 12))
    assert set(seen) == {(8, 16, 12)}
    assert out.shape == image.shape
    torch.testing.assert_close(out, image * 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_streamed_slabs_equal_the_whole_volume(dtype, batch_size) -> None:
    image = torch.randn(2, 37, 20, 18, generator=torch.Generator().manual_seed(3))
    net = _conv_net(2, 3, 3)
    patch = (8, 12, 12)
    whole = sliding_window(net, image, patch, batch_size=batch_size, accumulate_dtype=dtype)
    slabs = list(sliding_window_slabs(net, image, patch, batch_size=batch_size, accumulate_dtype=dtype))
    assert len(slabs) > 3  # really streamed
    starts = [z for z, _ in slabs]
    assert starts[0] == 0 and all(z + s.shape[1] == n for (z, s), (n, _) in zip(slabs, slabs[1:]))
    streamed = torch.cat([s for _, s in slabs], 1)
    assert torch.equal(streamed, whole)  # same windows, same order: bit-identical


def test_streaming_an_image_shorter_than_the_patch() -> None:
    image = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    net = _conv_net(1, 2, 3)
    whole = sliding_window(net, image, (8, 8, 8))
    streamed = torch.cat([s for _, s in sliding_window_slabs(net, image, (8, 8, 8))], 1)
    assert torch.equal(streamed, whole) and whole.shape == (2, 3, 20, 20)


def test_float16_accumulation_stays_close_to_float32() -> None:
    image = torch.randn(1, 24, 24, 24, generator=torch.Generator().manual_seed(5))
    net = _conv_net(1, 2, 3)
    full = sliding_window(lambda x: torch.softmax(net(x), 1), image, (16, 16, 16))
    half = sliding_window(lambda x: torch.softmax(net(x), 1), image, (16, 16, 16), accumulate_dtype=torch.float16)
    torch.testing.assert_close(half, full, rtol=0, atol=2e-3)


def test_flip_combinations() -> None:
    assert flip_combinations([2, 0, 1]) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert flip_combinations([]) == [()]


def test_tta_of_a_flip_equivariant_function_equals_no_tta() -> None:
    x = torch.randn(2, 2, 6, 8, 10, generator=torch.Generator().manual_seed(6))
    conv = torch.nn.Conv3d(2, 3, 3, padding=1, bias=True)
    with torch.no_grad():  # a kernel symmetric under every flip makes the convolution flip-equivariant
        weight = torch.randn(3, 2, 3, 3, 3)
        conv.weight.copy_(sum(weight.flip(list(c)) if c else weight for c in flip_combinations([2, 3, 4])))
    with torch.inference_mode():
        plain = conv(x)
        for axes in ([0, 1, 2], [1, 2], [0]):
            torch.testing.assert_close(mirrored(conv, axes)(x), plain, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(mirrored(conv, axes, max_batch=3)(x), plain, rtol=1e-5, atol=1e-5)


def test_tta_averages_the_unflipped_outputs() -> None:
    x = torch.randn(1, 1, 4, 5, generator=torch.Generator().manual_seed(7))
    ramp = torch.arange(5, dtype=torch.float32)  # not flip-equivariant: adds a ramp along the last axis
    predict = lambda t: t + ramp  # noqa: E731
    out = mirrored(predict, [1])(x)
    torch.testing.assert_close(out, x + ramp.mean())
    assert not torch.allclose(out, predict(x))


def test_window_grid_is_z_major() -> None:
    grid = window_grid((20, 20), (8, 8))
    assert grid == sorted(grid) and grid[0] == (0, 0) and grid[-1] == (12, 12)


def test_context_slices_reach_predict_and_only_the_window_is_answered():
    """2.5D windows: (1, Y, X) windows read with 2 slices each side (edge slices repeated); predict answers for
    the window's own slice. Here it returns the first context slice, so slice z predicts clamp(z - 2)."""
    z, y, x = 7, 20, 18
    image = torch.arange(z, dtype=torch.float32)[None, :, None, None].expand(1, z, y, x).contiguous()
    shapes = []

    def first_context_slice(patches: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(patches.shape))
        return patches[:, :, :1]

    expected = torch.arange(z).sub(2).clamp(0, z - 1).float()[:, None, None].expand(z, y, x)
    whole = sliding_window(first_context_slice, image, (1, 16, 16), batch_size=3, context=2)
    assert torch.allclose(whole[0], expected)
    assert shapes and all(s[1:] == (1, 5, 16, 16) for s in shapes)
    slabs = list(sliding_window_slabs(first_context_slice, image, (1, 16, 16), batch_size=3, context=2))
    assert torch.allclose(torch.cat([slab for _, slab in slabs], 1)[0], expected)
    assert torch.allclose(sliding_window(lambda p: p, image, (1, 16, 16)), image)  # no context: the window alone


def test_a_tile_of_the_plane_equals_the_whole_volume_where_its_windows_alone_reach() -> None:
    """``sliding_window_slabs(tile=...)`` runs only the tile's windows: where no other window reaches, the same
    bits as the whole volume; and the slabs cover the rows those windows reach (``tile_rows``)."""
    from medseg.inference.sliding_window import padded_starts, tile_rows

    image = torch.randn(1, 20, 40, 37, generator=torch.Generator().manual_seed(8))
    net = _conv_net(1, 2, 3)
    patch = (8, 12, 12)
    whole = sliding_window(net, image, patch, batch_size=2)
    starts_y, _ = padded_starts(40, 12)
    starts_x, _ = padded_starts(37, 12)
    tile = ((1, 4), (2, len(starts_x)))
    slabs = list(sliding_window_slabs(net, image, patch, batch_size=2, tile=tile))
    assert all(s.shape[1] <= 8 for _, s in slabs) and slabs[0][0] == 0
    tiled = torch.cat([s for _, s in slabs], 1)
    (y0, y1), (x0, x1) = tile_rows(40, 12, 0.5, tile[0]), tile_rows(37, 12, 0.5, tile[1])
    assert tiled.shape == (2, 20, y1 - y0, x1 - x0) and x1 == 37
    # the rows that only the tile's windows reach: after the end of the window before it, before the next one
    only = (slice(None), slice(None), slice(starts_y[0] + 12 - y0, starts_y[4] - y0),
            slice(starts_x[1] + 12 - x0, None))
    assert torch.equal(tiled[only], whole[:, :, y0:y1, x0:x1][only])
    assert not torch.equal(tiled, whole[:, :, y0:y1, x0:x1])  # elsewhere windows outside the tile are missing
