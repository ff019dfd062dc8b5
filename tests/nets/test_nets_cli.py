"""``medseg models``: the table lists every network with parameters and GFLOPs, 2D and 3D; bad sizes exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.nets import list_models, model_info


def _run(*args: str):
    return CliRunner().invoke(app, ["models", *args])


@pytest.mark.parametrize("size,dims", [("1x128x128", 2), ("1x64x64x64", 3)])
def test_models_json_lists_every_network(size, dims):
    result = _run("--size", size, "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == set(list_models(spatial_dims=dims))
    for name, row in rows.items():
        if row["params"] is None:  # only an optional dependency may be missing
            assert model_info(name).requires and "optional package" in row["note"]
            continue
        assert row["params"] > 1e5 and row["gflops"] > 0.1, row
    if dims == 2:
        assert abs(rows["unet_valid"]["params"] - 31.03e6) / 31.03e6 < 0.01  # the paper's ~31 M
        assert rows["unet_valid"]["input"] == "316x316"  # overlap tile for a >= 128 output
        # a padded plain U-Net at 128^2: ~24 GFLOPs by hand (sum of 2 * k^2 * Cin * Cout * H * W)
        assert 20 < rows["unet"]["gflops"] < 28


def test_models_table_prints():
    result = _run("--size", "1x64x64")
    assert result.exit_code == 0, result.output
    assert "plan_unet" in result.output and "GFLOPs" in result.output


@pytest.mark.parametrize("size", ["128x128", "1x128", "axbxc", "1x0x64"])
def test_models_bad_size_exits_2(size):
    result = _run("--size", size)
    assert result.exit_code == 2
    assert "--size" in result.output
