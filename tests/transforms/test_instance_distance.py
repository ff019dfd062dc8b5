"""The distance-map representation of instances: the target peaks at 1 inside every object and is 0 on borders
between touching ones; decoding the real MoNuSeg targets by marker watershed gives back the expert's nuclei,
where connected components of the same foreground merge the touching ones."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics import aggregated_jaccard, instance_metrics, instance_overlap, label_instances, match_instances
from medseg.transforms.instance_distance import distance_target, instances_from_distance, object_borders


def test_touching_objects_each_peak_at_one_and_meet_at_zero():
    instances = np.zeros((20, 30), np.int32)
    instances[4:16, 3:15] = 1
    instances[4:16, 15:27] = 2  # touches object 1 along a column
    instances[0:2, 0:2] = 3     # a 2x2 object: all border
    target = distance_target(instances)
    assert target.dtype == np.float32 and target.min() == 0.0 and target.max() == 1.0
    for value in (1, 2):
        assert target[instances == value].max() == pytest.approx(1.0)
    assert (target[:, 14] == 0).all() and (target[:, 15] == 0).all()  # the shared border
    assert (target[instances == 0] == 0).all() and (target[instances == 3] == 0).all()
    assert object_borders(instances)[0, 0] and not object_borders(instances)[10, 8]
    decoded = instances_from_distance(instances > 0, target)
    assert len(np.unique(decoded[instances == 1])) == 1 and len(np.unique(decoded[instances == 2])) == 1
    assert decoded[10, 8] != decoded[10, 20] and decoded[0, 0] > 0  # the markerless 2x2 is its own object
    assert ((decoded > 0) == (instances > 0)).all()


def test_real_monuseg_targets_decode_to_the_expert_nuclei(shared_data):
    from medseg.io import read_image

    root = shared_data / "monuseg"
    if not (root / "instancesTr").is_dir():
        pytest.skip("monuseg with instancesTr not in the real-data battery")
    for name in sorted(p.name for p in (root / "instancesTr").iterdir())[:2]:
        reference = read_image(root / "instancesTr" / name).array[0].astype(np.int64)
        decoded = instances_from_distance(reference > 0, distance_target(reference))
        merged = label_instances(reference > 0)
        ours, cc = instance_overlap(decoded, reference), instance_overlap(merged, reference)
        pq = instance_metrics(match_instances(ours, 0.5))["pq"]
        pq_cc = instance_metrics(match_instances(cc, 0.5))["pq"]
        assert pq > 0.9 and pq > pq_cc + 0.05, (name, pq, pq_cc)
        assert aggregated_jaccard(ours) > aggregated_jaccard(cc) + 0.05
        assert ((decoded > 0) == (reference > 0)).all()
