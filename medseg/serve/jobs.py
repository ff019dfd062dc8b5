"""The prediction service's jobs: a SQLite record of every job under the state folder (``JobStore``) and a bounded
queue worked by a fixed number of threads (``JobQueue``).

Durability: a job is committed (``synchronous=FULL``) before its submission is answered, and marked done only
after its result file is complete (written atomically). A server that dies leaves ``running`` rows behind; the
next start re-queues each of them (``attempts`` counts the tries) or, after ``max_attempts`` tries, marks it
failed with the reason, so that no job is ever lost or left running forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from medseg.errors import MedsegError

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed")
SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, caller TEXT NOT NULL, status TEXT NOT NULL, source TEXT NOT NULL,
    input_path TEXT NOT NULL, input_name TEXT NOT NULL, result_suffix TEXT NOT NULL, created REAL NOT NULL,
    started REAL, finished REAL, progress REAL NOT NULL DEFAULT 0, stage TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT, result_path TEXT, timings TEXT NOT NULL DEFAULT '{}')"""
COLUMNS = ("id", "model", "caller", "status", "source", "input_path", "input_name", "result_suffix", "created",
           "started", "finished", "progress", "stage", "attempts", "error", "result_path", "timings")


@dataclass
class Job:
    """One prediction: ``source`` "upload" (``input_path`` is the stored upload, deleted when the job ends) or
    "path" (a confined path under an allowed root, read when the job runs); times are Unix seconds."""

    model: str
    caller: str
    source: str
    input_path: str
    input_name: str
    result_suffix: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: float = 0.0
    stage: str = "queued"
    attempts: int = 0
    error: str | None = None
    result_path: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict:
        """What ``GET /v1/jobs/{id}`` answers (no server paths)."""
        queued_s = (self.started or self.finished or time.time()) - self.created
        return {"id": self.id, "model": self.model, "status": self.status, "stage": self.stage,
                "progress": self.progress, "attempts": self.attempts, "error": self.error,
                "input_name": self.input_name, "created": self.created, "started": self.started,
                "finished": self.finished, "timings": {"queued_s": queued_s, **self.timings}}


class JobStore:
    """Jobs in ``<state>/jobs.sqlite`` (WAL), one connection per thread: readers (status requests on the event
    loop) never wait for a worker's write. Submissions and status changes are synced to disk at commit
    (``synchronous=FULL``); progress updates only reach the log (``NORMAL``: they survive a killed process, and
    after a power cut the job is simply re-run)."""

    def __init__(self, state: Path):
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.path = self.state / "jobs.sqlite"
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=FULL")
            self._local.db, self._local.durable = db, True
            with self._opened_lock:
                self._opened.append(db)
        return db

    def _write(self, durable: bool) -> sqlite3.Connection:
        db = self._db()
        if self._local.durable != durable:
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._local.durable = durable
        return db

    def close(self) -> None:
        with self._opened_lock:
            for db in self._opened:
                db.close()
            self._opened = []
        self._local = threading.local()

    def add(self, job: Job, *, max_queued: int) -> None:
        """Insert ``job`` unless ``max_queued`` jobs already wait (``QueueFull``), in one transaction."""
        row = asdict(job)
        row["timings"] = json.dumps(job.timings)
        db = self._write(durable=True)
        db.execute("BEGIN IMMEDIATE")
        try:
            waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            if waiting >= max_queued:
                raise QueueFull(waiting)
            db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       [row[c] for c in COLUMNS])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def ids(self, status: str) -> list[str]:
        """Ids of the jobs in ``status``, oldest first."""
        rows = self._db().execute("SELECT id FROM jobs WHERE status = ? ORDER BY created, rowid", (status,))
        return [r[0] for r in rows.fetchall()]

    def count(self, status: str) -> int:
        return self._db().execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    def mean_run_seconds(self, last: int = 20, default: float = 5.0) -> float:
        """Mean time from start to end of the ``last`` finished jobs (``default`` when none finished)."""
        row = self._db().execute("SELECT AVG(finished - started) FROM (SELECT finished, started FROM jobs WHERE "
                                 "status = 'done' ORDER BY finished DESC LIMIT ?)", (last,)).fetchone()
        return float(row[0]) if row and row[0] is not None else default

    def update(self, job_id: str, *, durable: bool = True, **values) -> None:
        """Set columns of a job; ``durable=False`` for what may be lost on a power cut (progress)."""
        if "timings" in values:
            values["timings"] = json.dumps(values["timings"])
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown job columns {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._write(durable).execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values.values(), job_id])

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """After a restart: jobs left ``running`` go back to ``queued``, or to ``failed`` once they were tried
        ``max_attempts`` times. Returns (re-queued ids, failed ids)."""
        requeued, failed = [], []
        for job_id in self.ids("running"):
            job = self.get(job_id)
            assert job is not None
            if job.attempts >= max_attempts:
                self.update(job_id, status="failed", stage="failed", finished=time.time(),
                            error=f"the server stopped while this job ran, {job.attempts} time(s); it is not "
                                  "retried again (fix: check the server's memory and logs, then submit it again)")
                failed.append(job_id)
            else:
                self.update(job_id, status="queued", stage="queued", progress=0.0)
                requeued.append(job_id)
        return requeued, failed


class QueueFull(Exception):
    """Raised by ``JobStore.add`` when the queue holds its maximum of waiting jobs (answered with 429)."""

    def __init__(self, waiting: int):
        super().__init__(f"{waiting} jobs are waiting, the queue's maximum")
        self.waiting = waiting


Progress = Callable[[str, float], None]  # (stage, fraction 0..1)
Runner = Callable[[Job, Progress], tuple[Path, dict]]  # -> (result file, timings in seconds)


class JobQueue:
    """``workers`` threads run ``runner`` on the queued jobs, oldest first; at most ``max_queued`` wait."""

    def __init__(self, store: JobStore, runner: Runner, *, workers: int = 1, max_queued: int = 16,
                 max_attempts: int = 2):
        if workers < 1 or max_queued < 1 or max_attempts < 1:
            raise MedsegError(f"workers {workers}, queue {max_queued} and attempts {max_attempts} must each be at "
                              "least 1", fix="pass --workers and --queue of at least 1")
        self.store, self.runner = store, runner
        self.workers, self.max_queued, self.max_attempts = workers, max_queued, max_attempts
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.ended = 0  # jobs ended since start: a long poll re-reads its job when this changes
        self._ended_lock = threading.Lock()

    def start(self) -> dict[str, list[str]]:
        """Recover what a previous server left running, queue every waiting job and start the workers."""
        requeued, failed = self.store.recover(self.max_attempts)
        for job_id in self.store.ids("queued"):
            self._pending.put(job_id)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"medseg-serve-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if requeued or failed:
            logger.warning("restart: %d interrupted job(s) queued again, %d marked failed", len(requeued),
                           len(failed))
        return {"requeued": requeued, "failed": failed}

    def stop(self, timeout: float | None = None) -> None:
        for _ in self._threads:
            self._pending.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def submit(self, job: Job) -> Job:
        """Record ``job`` and queue it; ``QueueFull`` when ``max_queued`` jobs already wait."""
        self.store.add(job, max_queued=self.max_queued)
        self._pending.put(job.id)
        return job

    async def wait(self, job_id: str, timeout: float, *, tick: float = 0.02) -> Job | None:
        """The job once it is done or failed, or as it is after ``timeout`` seconds: a long poll that holds no
        thread (it sleeps on the event loop, and reads the store when a job ended, or once a second)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen, read_at = -1, 0.0
        while True:
            if self.ended != seen or loop.time() - read_at >= 1.0:
                seen, read_at = self.ended, loop.time()
                job = self.store.get(job_id)
                if job is None or job.status in ("done", "failed"):
                    return job
            if loop.time() >= deadline:
                return job
            await asyncio.sleep(tick)

    def _work(self) -> None:
        while True:
            job_id = self._pending.get()
            if job_id is None:
                return
            job = self.store.get(job_id)
            if job is None or job.status != "queued":
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        started = time.time()
        self.store.update(job.id, status="running", stage="starting", started=started, attempts=job.attempts + 1)

        def progress(stage: str, fraction: float) -> None:
            self.store.update(job.id, durable=False, stage=stage, progress=round(float(fraction), 4))

        try:
            result, timings = self.runner(job, progress)
        except MedsegError as error:
            self._fail(job, str(error))
        except Exception as error:  # a bug or an unexpected library error: the job fails, the worker lives on
            logger.exception("job %s failed", job.id)
            self._fail(job, f"internal error ({type(error).__name__}: {str(error)[:300]})")
        else:
            finished = time.time()
            self.store.update(job.id, status="done", stage="done", progress=1.0, finished=finished,
                              result_path=str(result), timings={**timings, "run_s": finished - started})
            self._drop_upload(job)
            self._count_end()

    def _fail(self, job: Job, reason: str) -> None:
        self.store.update(job.id, status="failed", stage="failed", finished=time.time(), error=reason)
        self._drop_upload(job)
        self._count_end()

    def _count_end(self) -> None:
        with self._ended_lock:
            self.ended += 1

    @staticmethod
    def _drop_upload(job: Job) -> None:
        if job.source == "upload":
            Path(job.input_path).unlink(missing_ok=True)


def _job(row: tuple) -> Job:
    values = dict(zip(COLUMNS, row))
    values["timings"] = json.loads(values["timings"] or "{}")
    return Job(**values)
