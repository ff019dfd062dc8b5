"""Several raters per case: the synthetic rater model (offsets are true erosions/dilations, cross-checked with
scikit-image), the dataset `medseg raters simulate` writes (real CVC-ClinicDB polyps), its consensus, and the
lines `medseg check` gives for a missing rater or one on another grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage.morphology import dilation, disk, erosion
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data.layout import open_dataset
from medseg.data.raters import RaterModel, majority_vote, simulate_raters
from medseg.io import Image, read_image, write_image
from tests.conftest import shared_subset


def _polyps(root: Path, count: int = 3) -> Path:
    return shared_subset("cvc_clinicdb", count, root)


def test_without_jitter_the_raters_are_erosion_label_and_dilation_of_a_real_polyp(tmp_path: Path) -> None:
    label = read_image(_polyps(tmp_path / "cvc", 1) / "labelsTr" / "cvc_clinicdb_0000.png").array[0] > 0
    raters = simulate_raters(label.astype(np.uint8), 3, model=RaterModel(bias=2.1, noise=0.0))
    # on the pixel lattice, "within 2.1 pixels" is the disk of radius 2 (the next distance is sqrt 5)
    assert np.array_equal(raters[0] > 0, erosion(label, disk(2)))
    assert np.array_equal(raters[1] > 0, label)
    assert np.array_equal(raters[2] > 0, dilation(label, disk(2)))


def test_jittered_raters_differ_near_the_boundary_and_vote_back_to_the_label(tmp_path: Path) -> None:
    label = (read_image(_polyps(tmp_path / "cvc", 1) / "labelsTr" / "cvc_clinicdb_0000.png").array[0] > 0)
    raters = simulate_raters(label.astype(np.uint8), 5, model=RaterModel(bias=2.0, noise=1.5), seed=3)
    assert np.array_equal(raters, simulate_raters(label.astype(np.uint8), 5, model=RaterModel(), seed=3))
    disagree = (raters > 0).any(0) & ~(raters > 0).all(0)
    from scipy import ndimage

    far = ndimage.distance_transform_edt(~label) + ndimage.distance_transform_edt(label) > 12
    assert disagree.sum() > 0.05 * label.sum() and not (disagree & far).any()  # a boundary spread only
    consensus = majority_vote(raters, [0, 1]) > 0
    assert (consensus != label).sum() < 0.1 * label.sum()
    sizes = (raters > 0).reshape(5, -1).sum(1)
    assert sizes[0] < sizes[2] < sizes[4]  # from the tightest rater to the most generous


def test_majority_vote_breaks_ties_towards_the_lower_label() -> None:
    raters = np.array([[0, 1, 2, 2], [1, 1, 2, 0], [0, 2, 1, 1], [1, 2, 1, 1]])
    assert majority_vote(raters, [0, 1, 2]).tolist() == [0, 1, 1, 1]  # rows: raters


def test_simulate_writes_raters_and_consensus_that_check_accepts(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "raters"
    result = runner.invoke(app, ["raters", "simulate", str(_polyps(tmp_path / "cvc")), "-o", str(out),
                                 "--raters", "4"])
    assert result.exit_code == 0, result.output
    dataset = open_dataset(out)
    assert dataset.raters == [1, 2, 3, 4] and len(dataset.cases) == 3 and not dataset.stray_files
    case = dataset.cases[0]
    maps = np.stack([read_image(case.rater_files[k]).array[0] for k in (1, 2, 3, 4)])
    consensus = read_image(case.label_file)
    assert consensus.spatial_shape == read_image(case.image_files[0]).spatial_shape
    assert np.array_equal(consensus.array[0], majority_vote(maps, [0, 1]))
    assert json.loads((out / "dataset.json").read_text())["raters"]["count"] == 4
    result = runner.invoke(app, ["check", str(out)])
    assert result.exit_code == 0, result.output

    (case.label_file).unlink()
    result = runner.invoke(app, ["check", str(out)])
    assert result.exit_code == 2 and "label file missing (the raters' consensus)" in result.output
    assert "medseg raters consensus" in result.output
    result = runner.invoke(app, ["raters", "consensus", str(out)])
    assert result.exit_code == 0 and "consensus of 1 case" in result.output, result.output
    assert np.array_equal(read_image(case.label_file).array[0], majority_vote(maps, [0, 1]))


def test_check_names_a_missing_rater_and_a_rater_on_another_grid(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "raters"
    assert runner.invoke(app, ["raters", "simulate", str(_polyps(tmp_path / "cvc")), "-o", str(out),
                               "--raters", "3"]).exit_code == 0
    (out / "labelsTr" / "cvc_clinicdb_0001_r2.png").unlink()
    small = read_image(out / "labelsTr" / "cvc_clinicdb_0002_r3.png")
    (out / "labelsTr" / "cvc_clinicdb_0002_r3.png").unlink()
    write_image(Image(small.array[:, ::2, ::2].copy(), small.spacing, small.origin, small.direction),
                out / "labelsTr" / "cvc_clinicdb_0002_r3.png")
    result = runner.invoke(app, ["check", str(out)])
    assert result.exit_code == 2
    assert "cvc_clinicdb_0001_r2.png: rater 2's label map missing" in result.output
    assert "cvc_clinicdb_0002_r3.png: not on the grid of cvc_clinicdb_0002_0000.png" in result.output
    result = runner.invoke(app, ["plan", str(out), "-o", str(tmp_path / "plans.json"), "--flops", "1e10"])
    assert result.exit_code == 2 and "rater 2's label map missing" in result.output


def test_the_raters_commands_refuse_bad_input_with_one_line_and_write_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    source = _polyps(tmp_path / "cvc")
    out = tmp_path / "raters"
    assert runner.invoke(app, ["raters", "simulate", str(source), "-o", str(out), "--raters", "2"]).exit_code == 0
    again = runner.invoke(app, ["raters", "simulate", str(source), "-o", str(out)])
    assert again.exit_code == 2 and "the output exists" in again.output
    twice = runner.invoke(app, ["raters", "simulate", str(out), "-o", str(tmp_path / "twice")])
    assert twice.exit_code == 2 and "already has 2 raters' label maps" in twice.output
    assert not (tmp_path / "twice").exists()
    none = runner.invoke(app, ["raters", "consensus", str(source)])
    assert none.exit_code == 2 and "no raters' label maps" in none.output

    label = read_image(source / "labelsTr" / "cvc_clinicdb_0001.png")
    (source / "labelsTr" / "cvc_clinicdb_0001.png").unlink()
    write_image(Image(label.array[:, ::2, ::2].copy(), label.spacing, label.origin, label.direction),
                source / "labelsTr" / "cvc_clinicdb_0001.png")
    bad = runner.invoke(app, ["raters", "simulate", str(source), "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "cvc_clinicdb_0001.png: not on the grid" in bad.output
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))

    (out / "labelsTr" / "cvc_clinicdb_0002.png").unlink()
    rater = read_image(out / "labelsTr" / "cvc_clinicdb_0002_r1.png")
    (out / "labelsTr" / "cvc_clinicdb_0002_r1.png").unlink()
    write_image(Image(rater.array[:, ::2, ::2].copy(), rater.spacing, rater.origin, rater.direction),
                out / "labelsTr" / "cvc_clinicdb_0002_r1.png")
    consensus = runner.invoke(app, ["raters", "consensus", str(out)])
    assert consensus.exit_code == 2 and "cvc_clinicdb_0002_r1.png: not on the grid" in consensus.output
    assert not (out / "labelsTr" / "cvc_clinicdb_0002.png").exists()
