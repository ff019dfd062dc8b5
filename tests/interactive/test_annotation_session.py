"""What the annotation page needs from a session: several structures on one image, manual edits (brush, eraser,
fill holes, largest component) beside the model, undo and redo across both, the label map along each axis, the
raw planes and window presets, and the server's endpoints for them."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.interactive.edits import apply_edit, largest_component, stroke_pixels
from medseg.interactive.prompts import Click
from medseg.interactive.session import InteractiveSession
from medseg.io import Image
from medseg.serve.encoding import rle_mask
from medseg.serve.interactive_app import create_app
from tests.interactive.test_interactive_session import DiscSegmenter, volume_image

TOKEN = "annotation-test-token"


def test_a_brush_stroke_paints_the_pixels_within_its_radius_of_the_line():
    shape = (30, 40)
    rows, cols = np.indices(shape)
    disc = stroke_pixels([(10.0, 12.0)], 4.0, shape)
    np.testing.assert_array_equal(disc, (rows - 10) ** 2 + (cols - 12) ** 2 <= 16)
    line = stroke_pixels([(5.0, 5.0), (5.0, 30.0)], 2.0, shape)  # a horizontal segment with round caps
    inside = (np.abs(rows - 5) <= 2) & (cols >= 5) & (cols <= 30)
    caps = ((rows - 5) ** 2 + (cols - 5) ** 2 <= 4) | ((rows - 5) ** 2 + (cols - 30) ** 2 <= 4)
    np.testing.assert_array_equal(line, inside | caps)
    thin = stroke_pixels([(2.0, 2.0), (12.0, 12.0)], 0.0, shape)  # radius 0: the diagonal's own pixels
    np.testing.assert_array_equal(np.argwhere(thin), [[i, i] for i in range(2, 13)])
    edge = stroke_pixels([(0.0, 0.0)], 3.0, shape)  # clipped at the border, no wrap-around
    assert edge[0, 0] and edge[3, 0] and not edge[-1].any() and not edge[:, -1].any()
    with pytest.raises(MedsegError, match="radius"):
        stroke_pixels([(1.0, 1.0)], -1.0, shape)
    with pytest.raises(MedsegError, match="needs 'points'"):
        stroke_pixels([], 2.0, shape)


def test_fill_holes_and_largest_component_agree_with_scipy():
    mask = np.zeros((20, 20), bool)
    mask[2:10, 2:10] = True
    mask[5, 5] = False  # a hole
    mask[14:17, 14:17] = True  # a smaller second component
    np.testing.assert_array_equal(apply_edit(mask, "fill_holes"), ndimage.binary_fill_holes(mask))
    kept = largest_component(mask)
    assert kept[3, 3] and not kept[15, 15] and kept.sum() == 63
    assert not largest_component(np.zeros((4, 4), bool)).any()
    with pytest.raises(MedsegError, match="unknown edit"):
        apply_edit(mask, "blur")


def test_two_structures_with_prompts_and_edits_undo_and_redo_round_trip():
    session = InteractiveSession(DiscSegmenter(radius=4))
    session.set_image(volume_image())
    session.set_label(2, "tumour")
    assert session.labels == {1: "object", 2: "tumour"}
    first = session.add(Click((6.0, 6.0)), 3, label=1)
    second = session.add(Click((14.0, 17.0)), 3, label=2)
    labels = session.mask()[3]
    np.testing.assert_array_equal(labels == 1, first)
    np.testing.assert_array_equal(labels == 2, second)
    assert not session.mask()[[0, 1, 2, 4, 5]].any()

    painted = session.edit("paint", 3, 1, points=[(6.0, 6.0), (6.0, 12.0)], radius=1.5)
    expected = first | stroke_pixels([(6.0, 6.0), (6.0, 12.0)], 1.5, (20, 24))
    np.testing.assert_array_equal(painted, expected)
    erased = session.edit("erase", 3, 1, points=[(6.0, 6.0)], radius=2.0)
    np.testing.assert_array_equal(erased, expected & ~stroke_pixels([(6.0, 6.0)], 2.0, (20, 24)))
    np.testing.assert_array_equal(session.undo(3, 1), expected)  # undo the eraser
    np.testing.assert_array_equal(session.undo(3, 1), first)  # undo the brush
    assert session.can_redo(3, 1)
    np.testing.assert_array_equal(session.redo(3, 1), expected)
    np.testing.assert_array_equal(session.redo(3, 1), erased)
    assert not session.can_redo(3, 1)
    np.testing.assert_array_equal(session.slice_mask(3, 2), second)  # the other structure untouched

    assert not session.undo(3, 2).any() and session.can_redo(3, 2)  # back to nothing, and forward again
    np.testing.assert_array_equal(session.redo(3, 2), second)
    session.undo(3, 2)
    session.add(Click((15.0, 18.0)), 3, label=2)  # a new step forgets what was undone
    assert not session.can_redo(3, 2)

    # the model sees the edited mask as its previous answer
    session.add(Click((12.0, 3.0)), 3, label=1)
    np.testing.assert_array_equal(session.segmenter.previous[-1] >= 0.5, erased)
    with pytest.raises(MedsegError, match="label 0 is outside"):
        session.add(Click((1.0, 1.0)), 3, label=0)
    with pytest.raises(MedsegError, match="outside the slice"):
        session.edit("paint", 3, 1, points=[(50.0, 1.0)], radius=1)


def test_overlapping_structures_go_to_the_more_probable_and_planes_cut_every_axis():
    session = InteractiveSession(DiscSegmenter(radius=5))
    image = volume_image()
    session.set_image(image)
    session.add(Click((10.0, 10.0)), 2, label=1)  # probability 1
    session.edit("paint", 2, 2, points=[(10.0, 13.0)], radius=2)  # a manual edit: 1 as well -> tie, label 1
    session.edit("paint", 4, 2, points=[(10.0, 13.0)], radius=2)
    labels = session.mask()
    assert labels[2, 10, 13] == 1 and labels[4, 10, 13] == 2
    for axis in range(3):
        for index in (2, 10):
            if index >= labels.shape[axis]:
                continue
            np.testing.assert_array_equal(session.label_plane(axis, index), np.take(labels, index, axis=axis))
            np.testing.assert_array_equal(session.plane(axis, index)[0], np.take(image.array[0], index, axis=axis))
    assert session.plane(1, 3).shape == (1, 6, 24) and session.plane(2, 3).shape == (1, 6, 20)
    with pytest.raises(MedsegError, match="axis 3 does not exist"):
        session.plane(3, 0)
    with pytest.raises(MedsegError, match="plane 20 does not exist along axis 1"):
        session.label_plane(1, 20)


def test_window_presets_offer_ct_windows_for_a_ct_and_percentiles_otherwise():
    session = InteractiveSession(DiscSegmenter())
    hu = np.random.default_rng(0).uniform(-1024, 1500, (1, 8, 32, 32)).astype(np.float32)
    session.set_image(Image.from_array(hu, channel_axis=True))
    names = [p["name"] for p in session.display_presets()]
    assert names[0].startswith("auto") and "CT lung" in names and names[-1] == "full range"
    lung = next(p for p in session.display_presets() if p["name"] == "CT lung")
    assert (lung["low"], lung["high"]) == (-1350.0, 150.0)  # width 1500, level -600
    session.set_image(volume_image())
    presets = session.display_presets()
    assert not any(p["name"].startswith("CT") for p in presets)
    values = volume_image().array[0]
    one_99 = next(p for p in presets if p["name"] == "1-99 %")
    np.testing.assert_allclose([one_99["low"], one_99["high"]], np.percentile(values, (1, 99)))


def test_the_server_answers_labels_edits_redo_planes_and_close(tmp_path):
    image = volume_image()
    app = create_app(DiscSegmenter(radius=4), token=TOKEN)
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    from medseg.io import write_image

    path = write_image(image, tmp_path / "scan.nii.gz")
    with path.open("rb") as stream:
        info = client.post("/api/images", files={"file": ("scan.nii.gz", stream)}).json()
    assert info["labels"] == [{"value": 1, "name": "object"}] and info["presets"][0]["name"].startswith("auto")
    image_id = info["id"]
    labels = client.post(f"/api/images/{image_id}/labels", json={"value": 2, "name": "tumour"}).json()
    assert labels == [{"value": 1, "name": "object"}, {"value": 2, "name": "tumour"}]
    assert client.post(f"/api/images/{image_id}/labels", json={"value": 300, "name": "x"}).status_code == 400

    one = client.post(f"/api/images/{image_id}/prompts", json={"slice": 1, "type": "click", "point": [5, 5]}).json()
    two = client.post(f"/api/images/{image_id}/edit", json={"slice": 1, "label": 2, "kind": "paint",
                                                            "points": [[12, 12], [12, 18]], "radius": 2}).json()
    assert one["label"] == 1 and two["label"] == 2 and two["area"] > 0 and not two["can_redo"]
    raw = client.get(f"/api/images/{image_id}/planes/0/1/labels")
    plane = np.frombuffer(raw.content, np.uint8).reshape([int(s) for s in raw.headers["x-shape"].split(",")])
    np.testing.assert_array_equal(plane == 1, rle_mask(one["mask"]))
    np.testing.assert_array_equal(plane == 2, rle_mask(two["mask"]))
    undone = client.post(f"/api/images/{image_id}/undo", json={"slice": 1, "label": 2}).json()
    assert undone["area"] == 0 and undone["can_redo"]
    assert client.get(f"/api/images/{image_id}/slices/1/mask", params={"label": 2}).json()["can_redo"]
    redone = client.post(f"/api/images/{image_id}/redo", json={"slice": 1, "label": 2}).json()
    assert redone["mask"] == two["mask"]

    data = client.get(f"/api/images/{image_id}/planes/1/7/data")
    assert data.headers["x-shape"] == "1,6,24"
    np.testing.assert_array_equal(np.frombuffer(data.content, "<f4").reshape(1, 6, 24)[0], image.array[0, :, 7])
    assert client.get(f"/api/images/{image_id}/planes/1/40/data").status_code == 400

    saved = client.get(f"/api/images/{image_id}/mask-file").content
    (tmp_path / "out.nii.gz").write_bytes(saved)
    from medseg.io import read_image

    written = read_image(tmp_path / "out.nii.gz")
    assert written.same_grid(image) and set(np.unique(written.array)) == {0, 1, 2}
    assert client.delete(f"/api/images/{image_id}").status_code == 200
    assert client.get(f"/api/images/{image_id}").status_code == 404


def test_structures_come_from_value_name_pairs_or_a_dataset_json(tmp_path):
    from medseg.interactive.structures import parse_structures

    assert parse_structures("2=tumour, 1=liver") == {1: "liver", 2: "tumour"}
    brats = tmp_path / "brats"
    brats.mkdir()
    (brats / "dataset.json").write_text('{"channel_names": {"0": "T1"}, "labels": {"background": 0, "edema": 1, '
                                        '"enhancing": [2, 3], "core": 2}, "numTraining": 1, '
                                        '"file_ending": ".nii.gz"}')
    assert parse_structures(str(brats)) == {1: "edema", 2: "core"}  # the region [2, 3] is not one value
    for bad, message in (("liver", "cannot read"), ("0=background", "outside 1..255"), (",", "no structures")):
        with pytest.raises(MedsegError, match=message):
            parse_structures(bad)
    session = InteractiveSession(DiscSegmenter())
    session.set_labels({3: "kidney"})
    assert session.labels == {3: "kidney"}
    app = create_app(DiscSegmenter(), token=TOKEN, structures={1: "liver", 2: "tumour"})
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    from medseg.io import write_image

    path = write_image(volume_image(), tmp_path / "scan.nii.gz")
    with path.open("rb") as stream:
        info = client.post("/api/images", files={"file": ("scan.nii.gz", stream)}).json()
    assert [entry["name"] for entry in info["labels"]] == ["liver", "tumour"]


def test_medseg_interactive_refuses_unreadable_structures_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.app import app

    for labels, message in (("liver", "cannot read the structure"), (str(tmp_path / "missing.json"),
                                                                     "file not found")):
        done = CliRunner().invoke(app, ["interactive", "--baseline", "random_walker", "--labels", labels])
        assert done.exit_code == 2 and message in done.output, done.output
        assert "Traceback" not in done.output
