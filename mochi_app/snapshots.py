"""Snapshots of what must outlive the queue server's own disk: job records, accounts, the guest secret."""

from __future__ import annotations

import gzip
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ValidationError
from redis import Redis

from mochi_app.accounts import Account, AccountStore
from mochi_app.config import Settings
from mochi_app.guests import GUEST_SECRET_FILE
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus, Progress
from mochi_app.storage import S3Client, calling_store, s3_client
from mochi_app.store import JobStore

log = logging.getLogger(__name__)

FORMAT = 1
BATCH = 500
# Two slots, written in turn: one always holds a whole snapshot, even where a write is not atomic (a mounted
# bucket uploads a file when it is closed) or is cut short; a torn one fails its gzip check and is skipped.
SLOTS = ("snapshot-a.json.gz", "snapshot-b.json.gz")
# Set on a server whose contents snapshots may keep: one restored, found holding jobs, or new with none to
# restore. An empty server without it lost its disk and was not restored: its emptiness must not overwrite
# the snapshots that could bring everything back.
KEPT_KEY = "snapshots:kept"


class SnapshotUnusable(ValueError):
    """A snapshot that cannot be read, or a server it must not be restored onto."""


class Snapshot(BaseModel):
    """Every job record and account at `taken_at`, and the secret that signs guests' tokens."""

    format: int = FORMAT
    taken_at: float
    records: list[JobRecord]
    accounts: list[Account]
    guest_secret: str | None = None  # hex, as the data folder's file holds it

    def encode(self) -> bytes:
        return gzip.compress(self.model_dump_json().encode(), compresslevel=6, mtime=0)

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        try:
            snapshot = cls.model_validate_json(gzip.decompress(data))
        except (OSError, EOFError, zlib.error, ValidationError) as exc:
            raise SnapshotUnusable(f"not a whole snapshot ({type(exc).__name__})") from None
        if snapshot.format != FORMAT:
            raise SnapshotUnusable(f"a snapshot of format {snapshot.format}; this version reads {FORMAT}")
        return snapshot


def take_snapshot(redis: Redis, data_dir: Path) -> Snapshot:
    """Read every record in batches while the studio runs: each record is read whole, and a job that changes
    meanwhile is kept as it was when read (the loss window is the time since the snapshot)."""
    queue_store = JobStore(redis)
    records: list[JobRecord] = []
    batch: list[str] = []
    for job_id in queue_store.job_ids(BATCH):
        batch.append(job_id)
        if len(batch) == BATCH:
            records += queue_store.get_many(batch)
            batch = []
    records += queue_store.get_many(batch)
    secret = data_dir / GUEST_SECRET_FILE
    return Snapshot(
        taken_at=time.time(),
        records=sorted(records, key=lambda record: record.created_at),
        accounts=AccountStore(redis).list(),
        guest_secret=secret.read_text().strip() if secret.is_file() else None,
    )


@dataclass(frozen=True, slots=True)
class Restored:
    jobs: int
    requeued: int
    accounts: int


def restore_snapshot(queue: JobQueue, snapshot: Snapshot, data_dir: Path) -> Restored:
    """Put a snapshot back onto a server that holds no jobs and no accounts (SnapshotUnusable otherwise).

    Ended jobs come back as they were, with their gallery entries. A job that was waiting or running comes
    back waiting, in the order it was submitted, and runs again.
    """
    store, accounts = queue.store, AccountStore(queue.redis)
    if not is_empty(queue.redis):
        raise SnapshotUnusable("the queue server already holds jobs or accounts; restore only onto an empty one")
    for account in snapshot.accounts:
        accounts.put_back(account)
    requeued = 0
    for record in snapshot.records:
        again = _as_restored(record)
        with queue.redis.pipeline() as pipe:
            pipe.multi()
            store.put_back(again, pipe)
            if again.status is JobStatus.PENDING:
                queue.push(pipe, record.job_id)
                requeued += 1
            pipe.execute()
    secret = data_dir / GUEST_SECRET_FILE
    if snapshot.guest_secret is not None and not secret.exists():
        _write_atomically(secret, snapshot.guest_secret.encode())
    queue.redis.set(KEPT_KEY, "restored")
    return Restored(len(snapshot.records), requeued, len(snapshot.accounts))


def _as_restored(record: JobRecord) -> JobRecord:
    """An ended job as it was; one that had not ended waits again (or ends CANCELLED, if it was asked to)."""
    if record.status.is_terminal:
        return record
    if record.cancel_requested:
        return record.model_copy(update={"status": JobStatus.CANCELLED, "finished_at": time.time()})
    return record.model_copy(
        update={
            "status": JobStatus.PENDING,
            "worker_id": None,
            "started_at": None,
            "progress": Progress(total=record.progress.total),
        }
    )


class SnapshotPlace(Protocol):
    """Somewhere to keep named blobs: a folder, or a bucket's prefix."""

    def write(self, name: str, data: bytes) -> None: ...

    def read(self, name: str) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class FolderPlace:
    folder: Path

    def write(self, name: str, data: bytes) -> None:
        _write_atomically(self.folder / name, data)

    def read(self, name: str) -> bytes | None:
        path = self.folder / name
        return path.read_bytes() if path.is_file() else None


@dataclass(frozen=True, slots=True)
class BucketPlace:
    client: S3Client
    bucket: str
    prefix: str = ""

    def write(self, name: str, data: bytes) -> None:
        with calling_store(self.bucket, "written"):
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{name}", Body=data)

    def read(self, name: str) -> bytes | None:
        with calling_store(self.bucket, "read"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{name}")["Body"]
            except self.client.exceptions.NoSuchKey:
                return None
            data: bytes = body.read()
        return data


def snapshot_place(settings: Settings) -> SnapshotPlace:
    """Beside the videos: `snapshots/` in the data folder, or under the bucket's prefix."""
    if settings.storage is None:
        return FolderPlace(settings.data_dir / "snapshots")
    return BucketPlace(s3_client(), settings.storage.bucket, f"{settings.storage.prefix}snapshots/")


def place_of(target: str) -> tuple[SnapshotPlace, str]:
    """A `backup`/`restore` target: `s3://BUCKET/KEY` or a file's path."""
    if target.startswith("s3://"):
        bucket, _, key = target.removeprefix("s3://").partition("/")
        if not bucket or not key or key.endswith("/"):
            raise SnapshotUnusable(f"an S3 target is s3://BUCKET/KEY, got {target!r}")
        return BucketPlace(s3_client(), bucket), key
    path = Path(target).expanduser().absolute()
    return FolderPlace(path.parent), path.name


def is_empty(redis: Redis) -> bool:
    return next(JobStore(redis).job_ids(), None) is None and not AccountStore(redis).list()


@dataclass
class Snapshots:
    """The two slots of one place: `save` overwrites the older, `latest` reads the newer whole one."""

    place: SnapshotPlace

    def keep(self, redis: Redis, data_dir: Path) -> bool:
        """Snapshot the server into the older slot, unless it is an empty one that was never restored while
        a snapshot with something in it waits (then say so, and keep the snapshots). Returns whether it saved."""
        if not redis.exists(KEPT_KEY):
            latest = self.latest() if is_empty(redis) else None
            if latest is not None and (latest.records or latest.accounts):
                log.warning(
                    "snapshots: the queue server is empty, but the snapshot of %s holds %d job(s) and %d "
                    "account(s); not overwriting it (restore it with `python -m mochi_app restore`)",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(latest.taken_at)),
                    len(latest.records),
                    len(latest.accounts),
                )
                return False
            redis.set(KEPT_KEY, "found")
        self.save(take_snapshot(redis, data_dir))
        return True

    def restore_if_empty(self, queue: JobQueue, data_dir: Path) -> Restored | None:
        """At boot: an empty server gets the latest snapshot back, if there is one."""
        if not is_empty(queue.redis):
            return None
        latest = self.latest()
        if latest is None:
            queue.redis.set(KEPT_KEY, "new")
            return None
        return restore_snapshot(queue, latest, data_dir)

    def save(self, snapshot: Snapshot) -> None:
        slots = {name: self._read(name) for name in SLOTS}
        older = min(SLOTS, key=lambda name: found.taken_at if (found := slots[name]) else -1.0)
        self.place.write(older, snapshot.encode())

    def latest(self) -> Snapshot | None:
        found = [snapshot for name in SLOTS if (snapshot := self._read(name)) is not None]
        return max(found, key=lambda snapshot: snapshot.taken_at, default=None)

    def _read(self, name: str) -> Snapshot | None:
        data = self.place.read(name)
        if data is None:
            return None
        try:
            return Snapshot.decode(data)
        except SnapshotUnusable as exc:
            log.warning("snapshot %s skipped: %s", name, exc)
            return None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(draft, path)
