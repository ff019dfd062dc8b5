"""Watch a PACS: poll QIDO-RS for studies of a configured kind, predict each one once and store its DICOM SEG back.

The state file (JSON, replaced atomically and fsynced at every change) records each study before its work starts
(``in_progress``), the SEG's UIDs before the SEG is stored, and the end (``done``, or ``failed`` with the reason).
A restart therefore never repeats a study that is done or failed and retries one that was in progress when the
watcher was killed; a retry whose recorded SEG is already in the study marks it done without storing another. A study without a series of the kind (yet) is not recorded and is looked at again on the next poll. A
server that does not answer ends a ``once`` pass with its error and is waited for otherwise; the study it
interrupted stays ``in_progress`` and is retried.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.serve.dicomweb import (NoSeriesOfKind, PacsConnection, PacsUnavailable, segment_series,
                                   select_series, stored_segmentation)

log = logging.getLogger(__name__)

STATE_SCHEMA = 1
STATUSES = ("in_progress", "done", "failed")


@dataclass(frozen=True)
class StudyOutcome:
    """What one pass did with one study: ``status`` is ``done`` or ``failed``; ``detail`` the SEG series UID or
    the error."""

    study_uid: str
    status: str
    detail: str


class WatchState:
    """The state file: ``{"schema_version": 1, "studies": {uid: {"status", "attempts", "started", "finished",
    "seg_series_uid" | "error"}}}``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.studies: dict[str, dict] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                studies = data["studies"]
                if data.get("schema_version") != STATE_SCHEMA or not isinstance(studies, dict) or any(
                        not isinstance(s, dict) or s.get("status") not in STATUSES for s in studies.values()):
                    raise ValueError("unknown layout")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
                raise MedsegError(f"not a medseg dicomweb watch state file ({error})", path=self.path,
                                  fix="pass the --state file an earlier watch wrote, or a new path") from None
            self.studies = studies

    def finished(self, study_uid: str) -> bool:
        return self.studies.get(study_uid, {}).get("status") in ("done", "failed")

    def start(self, study_uid: str) -> None:
        entry = self.studies.setdefault(study_uid, {"attempts": 0})
        entry.update(status="in_progress", attempts=entry.get("attempts", 0) + 1, started=_now())
        self._save()

    def update(self, study_uid: str, **fields: str) -> None:
        self.studies[study_uid].update(**fields)
        self._save()

    def finish(self, study_uid: str, status: str, **fields: str) -> None:
        self.update(study_uid, status=status, finished=_now(), **fields)

    def _save(self) -> None:
        text = json.dumps({"schema_version": STATE_SCHEMA, "studies": self.studies}, indent=2) + "\n"
        atomic_write(self.path, lambda temporary: temporary.write_text(text), durable=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def exclusive(state_path: Path) -> Iterator[None]:
    """Hold ``<state>.lock`` so that two watchers never share one state file (they would repeat studies)."""
    import fcntl

    lock_path = state_path.with_name(state_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MedsegError("another medseg dicomweb watch uses this state file", path=state_path,
                              fix="stop the other watcher, or give this one its own --state") from None
        yield


def watch_pass(pacs: PacsConnection, predictor, state: WatchState, *, channels: int, label_names: dict[int, str],
               modality: str | None = None, descriptions: Sequence[str] = ()) -> list[StudyOutcome]:
    """One poll: every study of ``modality`` that the state has not finished is predicted and its SEG stored.

    ``channels``: the model's input channels (one series each, chosen by ``select_series``)."""
    outcomes = []
    for study_uid in pacs.studies(modality=modality):
        if state.finished(study_uid):
            continue
        try:
            chosen = select_series(pacs.series(study_uid), channels, modality=modality, descriptions=descriptions)
        except NoSeriesOfKind:
            log.debug("study %s has no series of the kind (yet)", study_uid)
            continue
        except PacsUnavailable:
            raise
        except MedsegError as error:  # e.g. two series match one pattern: the study cannot be processed as it is
            state.start(study_uid)
            state.finish(study_uid, "failed", error=str(error))
            outcomes.append(StudyOutcome(study_uid, "failed", str(error)))
            continue
        outcomes.append(_process(pacs, predictor, state, study_uid, [s.series_uid for s in chosen], label_names))
    return outcomes


def _process(pacs: PacsConnection, predictor, state: WatchState, study_uid: str, series_uids: list[str],
             label_names: dict[int, str]) -> StudyOutcome:
    """Segment one study and store its SEG, recording each step. The SEG's UIDs are recorded before it is stored,
    so a retry after a kill between the store and ``done`` finds the stored SEG instead of storing a second."""
    earlier = state.studies.get(study_uid, {}).get("seg_series_uid")
    state.start(study_uid)
    try:
        if earlier and any(s.series_uid == earlier for s in pacs.series(study_uid)):
            state.finish(study_uid, "done")
            return StudyOutcome(study_uid, "done", earlier)
        seg = segment_series(pacs, predictor, study_uid, series_uids, label_names)
        stored = stored_segmentation(seg, series_uids)
        state.update(study_uid, seg_series_uid=stored.seg_series_uid, seg_instance_uid=stored.seg_instance_uid)
        pacs.store([seg])
    except PacsUnavailable:
        raise  # stays in_progress: retried on the next pass
    except MedsegError as error:
        state.finish(study_uid, "failed", error=str(error))
        return StudyOutcome(study_uid, "failed", str(error))
    state.finish(study_uid, "done")
    return StudyOutcome(study_uid, "done", stored.seg_series_uid)


def watch(pacs: PacsConnection, predictor, state_path: str | Path, *, channels: int, label_names: dict[int, str],
          modality: str | None = None, descriptions: Sequence[str] = (), interval: float = 60, once: bool = False,
          report: Callable[[StudyOutcome], None] | None = None) -> list[StudyOutcome]:
    """Poll every ``interval`` seconds (one pass with ``once``), calling ``report`` for each study finished.
    Returns the outcomes (of the one pass with ``once``; a loop without ``once`` ends only by a signal)."""
    state_path = Path(state_path)
    if interval <= 0:
        raise MedsegError(f"--interval {interval} is not positive", fix="pass the seconds between polls, e.g. 60")
    with exclusive(state_path):
        state = WatchState(state_path)
        while True:
            try:
                outcomes = watch_pass(pacs, predictor, state, channels=channels, label_names=label_names,
                                      modality=modality, descriptions=descriptions)
            except PacsUnavailable as error:
                if once:
                    raise
                log.warning("%s; polling again in %s s", error, interval)
                outcomes = []
            for outcome in outcomes:
                if report is not None:
                    report(outcome)
            if once:
                return outcomes
            time.sleep(interval)
