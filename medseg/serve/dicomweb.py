"""A PACS over DICOMweb: find studies and series (QIDO-RS), pull a series as an ``Image`` (WADO-RS), predict it
and store the DICOM SEG back (STOW-RS). A small layer over dicomweb-client whose failures are ``MedsegError``s
naming the server and the fix."""

from __future__ import annotations

import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.io.image import Image, grid_differences

# Modalities of series that hold results or documents, never an image to segment.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "SR", "KO", "REG", "DOC"})


class PacsUnavailable(MedsegError):
    """The server did not answer, refused the credentials or failed (5xx): nothing about a study is known."""


class NoSeriesOfKind(MedsegError):
    """A study holds no series of the kind asked for (modality, series description)."""


@dataclass(frozen=True)
class SeriesInfo:
    """One series as QIDO-RS describes it."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    number: int | None


@dataclass(frozen=True)
class StoredSegmentation:
    """What ``predict_study`` stored: the SEG's series and instance UIDs and the series it segments."""

    study_uid: str
    seg_series_uid: str
    seg_instance_uid: str
    source_series_uids: tuple[str, ...]


class PacsConnection:
    """A DICOMweb server at ``url`` (its root, e.g. ``http://pacs:8042/dicom-web``), with HTTP basic
    credentials or a bearer token (not both)."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 token: str | None = None, timeout: float = 120):
        import requests
        from dicomweb_client.api import DICOMwebClient

        if not re.match(r"^https?://", url):
            raise MedsegError(f"--dicomweb {url!r} is not an http(s) URL",
                              fix="pass the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
        if token is not None and (username is not None or password is not None):
            raise MedsegError("both a bearer token and a username/password were given", fix="pass one of them")
        if (username is None) != (password is None):
            raise MedsegError("a username needs a password and a password a username", fix="pass both")
        session = requests.Session()
        if username is not None:
            session.auth = (username, password)
        if token is not None:
            session.headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._client = DICOMwebClient(self.url, session=session, timeout=timeout)
        # dicomweb-client retries failed requests (refused connections, 429, 503 ...) 5 times over 30 s by default:
        # 3 tries over 3 s still ride out a restarting server, and a wrong URL is an error in seconds
        self._client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=500)

    @contextmanager
    def _request(self, what: str) -> Iterator[None]:
        """Turn the HTTP and connection failures of ``what`` into one ``MedsegError``."""
        import requests

        try:
            yield
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            fix = {401: "check the username/password or token", 403: "this user may not do this on the server",
                   404: "check the DICOMweb root in the URL (e.g. http://host:8042/dicom-web) and the UIDs"}
            # a 4xx is about this request (a study it cannot serve); 401 and 5xx are about the server
            kind = MedsegError if status is not None and 400 <= status < 500 and status != 401 else PacsUnavailable
            raise kind(f"{what} failed: HTTP {status}", path=self.url,
                       fix=fix.get(status, "see the server's log")) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise PacsUnavailable(f"{what}: no answer from the server ({type(error).__name__})", path=self.url,
                                  fix="check the URL and that the PACS is running") from None

    def studies(self, *, modality: str | None = None) -> list[str]:
        """UIDs of the studies that hold a series of ``modality`` (every study without one)."""
        filters = {"ModalitiesInStudy": modality} if modality else None
        found = self._search("searching studies (QIDO-RS)", self._client.search_for_studies, "StudyInstanceUID",
                             search_filters=filters)
        return sorted(str(item.StudyInstanceUID) for item in found)

    def series(self, study_uid: str) -> list[SeriesInfo]:
        """The series of one study, ordered by series number then UID."""
        found = self._search(f"searching the series of study {study_uid} (QIDO-RS)", self._client.search_for_series,
                             "SeriesInstanceUID", study_instance_uid=study_uid)
        infos = []
        for attributes in found:
            number = attributes.get("SeriesNumber")
            infos.append(SeriesInfo(study_uid, str(attributes.get("SeriesInstanceUID", "")),
                                    str(attributes.get("Modality", "")), str(attributes.get("SeriesDescription", "")),
                                    None if number in (None, "") else int(number)))
        return sorted(infos, key=lambda s: (s.number is None, s.number or 0, s.series_uid))

    def _search(self, what: str, search, key: str, **query) -> list:
        """Every result of a QIDO-RS search as ``pydicom.Dataset``s, one per ``key`` UID. Asked without a limit, a
        server answers all its results or its own page; the next page is asked at the offset reached, until a
        page brings no new UID. (dicomweb-client's ``get_remaining`` stops only at an empty page, which a server
        that ignores ``offset`` never sends: Orthanc 1.10's DICOMweb plugin with ModalitiesInStudy.)"""
        results: dict[str, object] = {}
        while True:
            with self._request(what):
                page = search(offset=len(results), **query) if results else search(**query)
            fresh = 0
            for item in page:
                attributes = _attributes(item)
                uid = str(attributes.get(key, ""))
                if uid and uid not in results:
                    results[uid] = attributes
                    fresh += 1
            if fresh == 0:
                return list(results.values())

    def retrieve_series(self, study_uid: str, series_uid: str) -> list:
        """Every instance of a series as ``pydicom.Dataset`` (WADO-RS)."""
        with self._request(f"retrieving series {series_uid} (WADO-RS)"):
            datasets = self._client.retrieve_series(study_uid, series_uid)
        if not datasets:
            raise MedsegError(f"series {series_uid} of study {study_uid} has no instances", path=self.url,
                              fix="check the UIDs")
        return datasets

    def store(self, datasets: Sequence) -> None:
        """Store instances (STOW-RS); a MedsegError when the server refuses any of them."""
        with self._request("storing (STOW-RS)"):
            response = self._client.store_instances(datasets)
        failed = getattr(response, "FailedSOPSequence", None) if response is not None else None
        if failed:
            reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
            raise MedsegError(f"the server refused {len(failed)} instance(s) (failure reasons {', '.join(reasons)})",
                              path=self.url, fix="see the server's log")


def _attributes(item: dict):
    """A QIDO-RS JSON result as a ``pydicom.Dataset``."""
    import pydicom

    return pydicom.Dataset.from_json(item)


def select_series(series: Sequence[SeriesInfo], channels: int, *, modality: str | None = None,
                  descriptions: Sequence[str] = ()) -> list[SeriesInfo]:
    """The image series of one study that a model with ``channels`` inputs takes, in channel order.

    With ``descriptions`` (one regular expression per channel), channel ``i`` is the one series whose description
    matches ``descriptions[i]``; without, a one-channel model takes the study's only image series. Series of
    ``NON_IMAGE_MODALITIES`` (a SEG stored earlier) and, with ``modality``, of other modalities are never taken.
    """
    candidates = [s for s in series if s.modality not in NON_IMAGE_MODALITIES
                  and (modality is None or s.modality == modality)]
    listed = "; ".join(f"{s.series_uid} ({s.modality} {s.description!r})" for s in candidates) or "none"
    if descriptions:
        if len(descriptions) != channels:
            raise MedsegError(f"{len(descriptions)} series description pattern(s) for a model with {channels} "
                              "channel(s)", fix="give one --series-description per channel, in the model's order")
        chosen = []
        for pattern in descriptions:
            matches = [s for s in candidates if re.search(pattern, s.description)]
            if not matches:
                raise NoSeriesOfKind(f"no series of study {series[0].study_uid if series else '?'} matches "
                                     f"--series-description {pattern!r} (image series: {listed})",
                                     fix="check the pattern (a regular expression searched in SeriesDescription)")
            if len(matches) != 1:
                raise MedsegError(f"{len(matches)} series of study {series[0].study_uid if series else '?'} match "
                                  f"--series-description {pattern!r} (image series: {listed})",
                                  fix="use a pattern that matches exactly one series")
            chosen.append(matches[0])
        return chosen
    if channels == 1 and len(candidates) == 1:
        return candidates
    if not candidates:
        raise NoSeriesOfKind(f"study {series[0].study_uid if series else '?'} has no image series"
                             + (f" of modality {modality}" if modality else ""), fix="check the study UID")
    study = series[0].study_uid if series else "?"
    raise MedsegError(f"cannot choose {channels} input series of study {study} from its image series: {listed}",
                      fix="pass --series UID (one per channel, in the model's channel order)")


def input_series_count(predictor) -> int:
    """How many series (one per input channel) ``predictor`` (a ``Predictor`` or ``EnsemblePredictor``) takes: its
    channels less a cascade's first-stage label channels, which it makes itself."""
    member = (getattr(predictor, "predictors", None) or [predictor])[0]
    if member.in_channels is None:
        return 1
    return member.in_channels - len(member.previous_labels)


def series_image(datasets: Sequence, series_uid: str) -> Image:
    """The ``Image`` of a series' instances, read as ``medseg.io.dicom.read_dicom_series`` reads a folder (the
    instances are written to a temporary folder first: one reader of DICOM series)."""
    from medseg.io.dicom import read_dicom_series

    with tempfile.TemporaryDirectory(prefix="medseg-dicomweb-") as folder:
        for index, dataset in enumerate(datasets):
            dataset.save_as(Path(folder) / f"{index:06d}.dcm", enforce_file_format=True)
        return read_dicom_series(Path(folder), series_uid)


def stack_channels(images: Sequence[Image], series_uids: Sequence[str]) -> Image:
    """One ``(C, Z, Y, X)`` image of ``C`` one-channel series on one grid."""
    first = images[0]
    for image, uid in zip(images[1:], series_uids[1:]):
        problems = grid_differences(first, image)
        if problems:
            raise MedsegError(f"series {uid} is not on the grid of series {series_uids[0]}: {'; '.join(problems)}",
                              fix="pass series acquired on one grid (or resample them into one first)")
    array = np.concatenate([image.array for image in images]).astype(np.float32, copy=False)
    return Image(array, first.spacing, first.origin, first.direction, dict(first.metadata))


def segment_series(pacs: PacsConnection, predictor, study_uid: str, series_uids: Sequence[str],
                   label_names: dict[int, str]):
    """Pull the series ``series_uids`` (one per input channel, in order), predict them with ``predictor`` (a
    ``Predictor`` or ``EnsemblePredictor``) and return the labels as a DICOM SEG ``pydicom.Dataset`` referencing
    the first series (not stored yet).

    ``label_names``: label value -> segment label, for the values other than background."""
    import pydicom

    from medseg.io.dicom_seg import write_dicom_seg

    pulled = [pacs.retrieve_series(study_uid, uid) for uid in series_uids]
    image = stack_channels([series_image(datasets, uid) for datasets, uid in zip(pulled, series_uids)],
                           series_uids)
    labels = predictor.predict(image)
    with tempfile.TemporaryDirectory(prefix="medseg-dicomweb-") as folder:
        path = write_dicom_seg(labels, list(pulled[0]), label_names, Path(folder) / "seg.dcm")
        return pydicom.dcmread(path)


def stored_segmentation(seg, source_series_uids: Sequence[str]) -> StoredSegmentation:
    return StoredSegmentation(str(seg.StudyInstanceUID), str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID),
                              tuple(source_series_uids))


def predict_study(pacs: PacsConnection, predictor, study_uid: str, series_uids: Sequence[str],
                  label_names: dict[int, str]) -> StoredSegmentation:
    """``segment_series`` and store the SEG in the study (STOW-RS)."""
    seg = segment_series(pacs, predictor, study_uid, series_uids, label_names)
    pacs.store([seg])
    return stored_segmentation(seg, series_uids)
