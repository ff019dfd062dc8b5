"""``UniversalModel``: a universal model folder (``medseg train-universal``) asked for structures by name.

``segment(image, prompts)`` matches each prompt to a vocabulary entry (``medseg.universal.names``), groups the
prompts by the dataset the entry was learned from, and predicts the image once per such dataset through an
ordinary ``medseg.inference.Predictor``: that dataset's plan (spacing, normalisation, patch; sliding window,
mirroring, back to the image's geometry) and the network as that dataset sees it (``SourceView``). A prompt's
mask is the predicted labels that its entry covers (one label, or several for a region or parent structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.config import Plan, read_json
from medseg.config.model_folder import read_model_spec
from medseg.errors import MedsegError
from medseg.io import Image
from medseg.universal.names import Match, NameMatcher, TextEncoder
from medseg.universal.sources import SourceView, UniversalSource
from medseg.universal.training import CONFIGURATION, FOLD, plan_path
from medseg.universal.vocabulary import Origin, Vocabulary

SHIPPED = Path(__file__).resolve().parent / "weights"  # the shipped model (bench/train_shipped.py --universal)


@dataclass
class PromptMask:
    """One prompt's answer: the entry it matched (how, and how well), the dataset whose view predicted it, and the
    mask ``(1, *spatial)`` uint8 (0/1) on the image's grid."""

    match: Match
    dataset: str
    mask: Image


class UniversalModel:
    """A loaded universal model: ``from_folder(path)``, then ``segment(image, prompts)`` or ``match(prompt)``."""

    def __init__(self, folder: Path, network, sources: Sequence[UniversalSource], plans: dict[str, Plan],
                 vocabulary: Vocabulary, *, device: str = "cpu", tta: bool = True,
                 encoder: TextEncoder | None = None):
        self.folder, self.network, self.device, self.tta = folder, network, device, tta
        self.sources = {s.name: s for s in sources}
        self.plans, self.vocabulary = plans, vocabulary
        self.matcher = NameMatcher(vocabulary, encoder)
        self._predictors: dict[str, object] = {}

    @classmethod
    def from_folder(cls, folder: str | Path | None = None, *, device: str = "cpu", tta: bool = True,
                    encoder: TextEncoder | None = None) -> "UniversalModel":
        """Load a universal model folder (``folder`` None: the shipped model)."""
        from medseg.devices import require_device
        from medseg.nets.from_folder import load_network

        if folder is None:
            if not (SHIPPED / "model.json").is_file():
                raise MedsegError("this install has no shipped universal model", path=SHIPPED,
                                  fix="pass a model folder with -m (medseg train-universal writes one)")
            folder = SHIPPED
        folder = Path(folder)
        if not folder.is_dir():
            raise MedsegError("model folder not found", path=folder,
                              fix="pass the folder that medseg train-universal wrote")
        require_device(device)
        spec = read_model_spec(folder)
        if spec.task != "universal":
            raise MedsegError(f"a {spec.task} model, not a universal one", path=folder,
                              fix="pass a folder written by medseg train-universal (or omit -m for the shipped one)")
        sources = [UniversalSource.from_dict(s) for s in spec.extra.get("sources", [])]
        plans = {}
        for source in sources:
            path = plan_path(folder, source.name)
            if not path.is_file():
                raise MedsegError(f"the plan of {source.name} is missing", path=path,
                                  fix="the model folder is incomplete; copy it whole or retrain")
            plans[source.name] = Plan.from_dict(read_json(path), path=path)
        network = load_network(folder, FOLD, device=device, spec=spec)
        return cls(folder, network, sources, plans, Vocabulary.read(folder), device=device, tta=tta, encoder=encoder)

    def match(self, prompt: str) -> Match:
        return self.matcher.match(prompt)

    def predictor(self, dataset: str):
        """The ``Predictor`` of ``dataset``'s view of the network (made once)."""
        from medseg.inference import Predictor

        if dataset not in self._predictors:
            source = self.sources[dataset]
            config = self.plans[dataset].configurations[CONFIGURATION]
            self._predictors[dataset] = Predictor([SourceView(self.network, source)], config,
                                                  [0, *source.label_values], tta=self.tta, device=self.device)
        return self._predictors[dataset]

    def _origin(self, match: Match, image: Image) -> Origin:
        """The entry's origin that can read ``image``: the first whose dataset has the image's channel count."""
        for origin in match.entry.origins:
            if self.sources[origin.dataset].channels == image.num_channels:
                return origin
        learned = ", ".join(f"{o.dataset} ({self.sources[o.dataset].channels} channel(s))"
                            for o in match.entry.origins)
        raise MedsegError(f"{match.entry.name!r} was learned from {learned}; the image has {image.num_channels}",
                          path=", ".join(map(str, image.metadata.get("source_files") or [])) or None,
                          fix="give an image of that kind (one file per channel, in the training order)")

    def segment(self, image: Image, prompts: Sequence[str]) -> list[PromptMask]:
        """One ``PromptMask`` per prompt, in order. Every prompt is matched (and checked against the image) before
        any prediction; an unknown one raises ``UnknownStructure`` listing the nearest known structures."""
        if not prompts:
            raise MedsegError("no prompt given", fix='name a structure, e.g. --prompt "lung"')
        return self.segment_matches(image, [self.match(p) for p in prompts])

    def segment_matches(self, image: Image, matches: Sequence[Match]) -> list[PromptMask]:
        """``segment`` for prompts already matched (``match``): each checked against the image, then predicted."""
        origins = [self._origin(m, image) for m in matches]
        labels: dict[str, np.ndarray] = {}
        for origin in origins:
            if origin.dataset not in labels:
                labels[origin.dataset] = self.predictor(origin.dataset).predict(image).array[0]
        out = []
        for match, origin in zip(matches, origins):
            mask = np.isin(labels[origin.dataset], origin.label_values).astype(np.uint8)
            out.append(PromptMask(match, origin.dataset, image.with_array(mask[None])))
        return out
