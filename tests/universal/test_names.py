"""Free text to structures: the robustness table of issue 23 (>= 40 phrasings, >= 95 % correct), names outside
the vocabulary answered with the nearest known structures, ambiguity refused, the vocabulary built from the
shared datasets' dataset.json files."""

from __future__ import annotations

import json

import pytest

from medseg.universal.names import NameMatcher, UnknownStructure
from medseg.universal.text import normalise
from medseg.universal.vocabulary import Vocabulary, dataset_entries, merge_vocabularies
from tests.conftest import shared_dataset

DATASETS = ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini", "monuseg", "hippocampus", "cxr_lungs"]

# phrasing -> the structure it must find: synonyms, spellings, abbreviations, other languages, plural/singular,
# modality words, typos, paraphrases
TABLE = {
    "lung": "lung", "Lungs": "lung", "lungs on the chest X-ray": "lung", "left and right lung fields": "lung",
    "poumons": "lung", "Lunge": "lung", "pulmones": "lung", "lung feilds": "lung",
    "polyp": "polyp", "colon polyps": "polyp", "polype": "polyp", "colorectal polyp in colonoscopy": "polyp",
    "pollyp": "polyp", "adenoma": "polyp",
    "retinal vessels": "retinal vessel", "blood vessels of the retina": "retinal vessel",
    "vaisseaux": "retinal vessel", "fundus vasculature": "retinal vessel", "vessel": "retinal vessel",
    "cell membranes in EM": "cell membrane", "membrane": "cell membrane", "neuron boundaries": "cell membrane",
    "nuclei": "nucleus", "cell nuclei in H&E": "nucleus", "noyaux": "nucleus", "Zellkerne": "nucleus",
    "nucleus segmentation": "nucleus",
    "enhancing tumour": "enhancing tumour", "enhancing tumor": "enhancing tumour", "ET": "enhancing tumour",
    "contrast-enhancing tumour on T1c": "enhancing tumour",
    "oedema": "edema", "edema": "edema", "peritumoural oedema on FLAIR": "edema", "odeme": "edema",
    "necrotic core": "necrosis", "necrosis": "necrosis", "nécrose": "necrosis",
    "non-enhancing tumor": "non-enhancing tumour", "NET": "non-enhancing tumour",
    "whole tumour": "whole tumour", "tumeur": "whole tumour", "brain tumor on MRI": "whole tumour",
    "glioma": "whole tumour", "WT": "whole tumour",
    "tumour core": "tumour core", "tumor core": "tumour core", "TC": "tumour core",
    "hippocampus": "hippocampus", "hipocampus": "hippocampus", "hippocampi": "hippocampus",
    "hippocampe": "hippocampus", "anterior hippocampus": "anterior hippocampus",
    "hippocampal head": "anterior hippocampus", "posterior hippocampus": "posterior hippocampus",
    "hippocampal tail": "posterior hippocampus",
}
OUTSIDE = ["liver", "kidney", "the heart", "pancreas", "spleen", "prostate", "femur", "aorta"]


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    per = []
    for name in DATASETS:
        spec = json.loads((shared_dataset(name) / "dataset.json").read_text())
        per.append(dataset_entries(spec["name"], spec["labels"], list(spec["channel_names"].values()),
                                   spec.get("regions_commonly_scored")))
    return merge_vocabularies(per)


@pytest.fixture(scope="module")
def matcher(vocabulary) -> NameMatcher:
    return NameMatcher(vocabulary)


def test_the_vocabulary_has_every_class_region_and_parent_of_the_shared_datasets(vocabulary):
    by_name = {e.name: e for e in vocabulary.entries}
    assert by_name["whole tumour"].origins[0].label_values == [1, 2, 3, 4]  # a BraTS region
    assert by_name["tumour core"].origins[0].label_values == [1, 3, 4]
    assert by_name["enhancing tumour"].origins[0].label_values == [4]  # the region of one label joins its class
    assert by_name["hippocampus"].origins[0].label_values == [1, 2]  # the parent of anterior + posterior
    assert by_name["lung"].origins[0].dataset == "CXR_lung_fields_MC_SZ"
    assert by_name["lung"].modality == "X-ray"
    assert len(vocabulary.entries) == 14
    assert Vocabulary.from_dict(vocabulary.to_dict()).to_dict() == vocabulary.to_dict()


def test_the_robustness_table_is_at_least_95_percent_correct(matcher):
    assert len(TABLE) >= 40
    chosen = {}
    for phrase in TABLE:
        try:
            chosen[phrase] = matcher.match(phrase).entry.name
        except UnknownStructure as error:
            chosen[phrase] = f"unknown: {error}"
    wrong = {p: c for p, c in chosen.items() if c != TABLE[p]}
    assert len(wrong) <= 0.05 * len(TABLE), wrong
    methods = {matcher.match(p).method for p in TABLE if p not in wrong}
    assert methods == {"exact", "fuzzy", "embedding"}  # each of the three ways is exercised


@pytest.mark.parametrize("phrase", OUTSIDE)
def test_a_name_outside_the_vocabulary_gets_the_nearest_known_structures_never_a_class(matcher, phrase):
    with pytest.raises(UnknownStructure) as raised:
        matcher.match(phrase)
    assert len(raised.value.nearest) == 3
    assert "nearest known structures" in str(raised.value) and raised.value.fix


def test_two_structures_sharing_a_synonym_lose_it_and_a_prompt_for_it_is_ambiguous_not_a_guess():
    a = dataset_entries("LiverCT", {"background": 0, "tumour_a": 1}, ["CT"])
    b = dataset_entries("KidneyCT", {"background": 0, "tumour_b": 1}, ["CT"])
    a[0].synonyms, b[0].synonyms = ["lesion", "liver lesion"], ["lesion", "kidney lesion"]
    vocabulary = merge_vocabularies([a, b])
    assert [e.synonyms for e in vocabulary.entries] == [["liver lesion"], ["kidney lesion"]]
    with pytest.raises(UnknownStructure) as raised:
        NameMatcher(vocabulary).match("lesion")
    assert {e.name for e in raised.value.nearest} == {"tumour a", "tumour b"}


def test_two_structures_whose_names_read_alike_are_refused_as_ambiguous():
    vocabulary = merge_vocabularies([dataset_entries("A", {"background": 0, "tumour (MRI)": 1}, ["MRI"]),
                                     dataset_entries("B", {"background": 0, "tumour (CT)": 1}, ["CT"])])
    assert len(vocabulary.entries) == 2
    with pytest.raises(UnknownStructure, match="more than one"):
        NameMatcher(vocabulary).match("tumour")


def test_datasets_naming_a_structure_alike_share_one_entry_with_both_origins():
    vocabulary = merge_vocabularies([dataset_entries("A", {"background": 0, "lung": 1}, ["CT"]),
                                     dataset_entries("B", {"background": 0, "Lungs": 2}, ["Xray"])])
    assert len(vocabulary.entries) == 1
    assert [(o.dataset, o.label_values) for o in vocabulary.entries[0].origins] == [("A", [1]), ("B", [2])]


def test_normalise_drops_filler_and_modality_words_and_makes_words_singular():
    assert normalise("Segment the LUNGS on the chest X-ray") == "lung"
    assert normalise("Cell nuclei (H&E)") == "cell nucleus"
    assert normalise("Nécrose") == "necrose"
    assert normalise("the MRI") == "the mri"  # nothing but filler: the plain form


def test_loading_the_text_encoder_leaves_torch_device_contexts_working(matcher):
    import torch

    matcher.match("neuron boundaries")  # loads the sentence-embedding model in this process
    with torch.device("meta"):
        assert torch.linspace(0.0, 1.0, 3).device.type == "meta"  # what the planner's meta-device checks need
