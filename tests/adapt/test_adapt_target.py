"""The target side of medseg adapt: the draw of the shots and the base plan's normalisation for the target's
channels."""

from __future__ import annotations

import pytest

from medseg.adapt.target import draw_shots
from medseg.planning.transfer import target_normalization
from medseg.config import Normalization
from medseg.data.layout import open_dataset
from medseg.errors import MedsegError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from medseg.synth.shapes import write_shapes_dataset

    return open_dataset(write_shapes_dataset(tmp_path_factory.mktemp("d") / "shapes", num_cases=6))


def ids(dataset) -> list[str]:
    return [c.case_id for c in dataset.cases]


def test_the_draw_depends_on_seed_and_count_only_and_checks_the_count(shapes):
    first = draw_shots(shapes, 3, seed=0)
    assert ids(first) == ids(draw_shots(shapes, 3, seed=0)) and len(ids(first)) == 3
    assert set(ids(first)) <= set(ids(shapes)) and first.spec.num_training == 3
    assert len({tuple(ids(draw_shots(shapes, 3, seed=s))) for s in range(8)}) > 1
    assert ids(draw_shots(shapes, 6, seed=5)) == ids(shapes)
    for bad in (0, 7):
        with pytest.raises(MedsegError, match="--shots"):
            draw_shots(shapes, bad, seed=0)


@pytest.mark.parametrize("base, channels, expected", [
    ([Normalization("ct", clip=[-100, 200], mean=40, std=50)], ["CT"], ["ct"]),
    ([Normalization("zscore", use_mask=True)], ["R", "G", "B"], ["zscore"] * 3),
    ([Normalization("zscore"), Normalization("zscore")], ["T1"], ["zscore"]),
    ([Normalization("rgb")] * 3, ["EM"], ["rgb"]),
    ([Normalization("ct", clip=[-100, 200], mean=40, std=50)], ["R", "G", "B"], ["rgb"] * 3),
])
def test_the_base_normalisation_serves_the_target_channels(base, channels, expected):
    normalization, reason = target_normalization(base, channels)
    assert [n.scheme for n in normalization] == expected and reason
    if len(base) == len(channels):
        assert normalization == base
    if expected == ["zscore"] * 3:
        assert all(n.use_mask for n in normalization)


def test_a_ct_base_for_other_grey_channels_is_refused():
    with pytest.raises(MedsegError, match="2 channel"):
        target_normalization([Normalization("ct", clip=[0, 1], mean=0, std=1)], ["MR", "PD"])
