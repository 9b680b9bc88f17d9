"""Where finished videos are kept: the data folder's videos folder, or an S3-compatible object store."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from mochi_app.config import BucketURL, Settings
from mochi_app.records import JobRecord
from mochi_app.video import VIDEO_NAME, VideoNotWritten, attempt_video_path, job_videos, poster_of, recorded_video

S3Client = Any  # boto3 ships no types
log = logging.getLogger(__name__)

Method = Literal["GET", "HEAD"]
# Larger videos go up in parts of this size: S3 wants at least 5 MiB a part (but the last) and at most 10,000 parts.
PART_BYTES = 16 * 2**20
JOB_ID = re.compile(r"[0-9a-f-]{36}")


class VideoNotStored(VideoNotWritten):
    """The finished MP4 could not be put in the object store; no object was left under its name."""


class StorageUnusable(RuntimeError):
    """The object store cannot be reached or written with the configured credentials."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A video on this host's disk, served by the web itself."""

    path: Path


@dataclass(frozen=True, slots=True)
class StoredLink:
    """A short-lived link to a video in the object store, for the client to fetch from there."""

    url: str


VideoLocation = StoredFile | StoredLink


class VideoStorage(Protocol):
    """What the worker, the web and the chores need from wherever videos are kept.

    A record's `video_path` is the name `keep` returned; every method checks that a name belongs to the
    record's own job before it touches anything, so a record edited in Redis cannot point elsewhere.
    """

    def check(self) -> None:
        """StorageUnusable, in one line, when videos cannot be kept there."""

    def sweep(self, older_than_s: float) -> int:
        """Remove what attempts killed mid-encode or mid-upload left on this host's disk, if older than any
        live attempt can be; returns how many files."""

    def staging_path(self, record: JobRecord) -> Path:
        """Where this attempt at the job encodes its MP4 (a name no other attempt uses)."""

    def keep(self, staged: Path, record: JobRecord) -> str:
        """Make the staged MP4 the attempt's stored video; returns its name, for the record."""

    def keep_poster(self, record: JobRecord, video: str, data: bytes) -> None:
        """Keep the poster (posters.poster_webp) of the attempt's stored video `video`, beside it."""

    def drop(self, record: JobRecord, name: str) -> None:
        """Remove one attempt's stored video and its poster: the attempt lost the job, so the record does not
        name them."""

    def remove(self, record: JobRecord) -> None:
        """Remove every attempt's video and poster of the job, and its checkpoint."""

    def has(self, record: JobRecord) -> bool:
        """Whether the record names a video of its own job that can be served."""

    def locate(self, record: JobRecord, method: Method = "GET") -> VideoLocation | None:
        """How a client gets the record's video, or None when there is none to get."""

    def locate_poster(self, record: JobRecord, method: Method = "GET") -> VideoLocation | None:
        """How a client gets the poster of the record's video, or None when there is none to get."""

    def save_checkpoint(self, record: JobRecord, data: bytes) -> None:
        """Keep the job's latest denoising checkpoint (checkpoints.to_bytes), replacing the last one atomically."""

    def load_checkpoint(self, record: JobRecord) -> bytes | None:
        """The job's latest checkpoint, or None when it has none."""

    def drop_checkpoint(self, record: JobRecord) -> None:
        """Remove the job's checkpoint, if it has one."""


def open_storage(settings: Settings) -> VideoStorage:
    """The storage MOCHI_STORAGE_URL names: the videos folder by default."""
    if settings.storage is None:
        return FolderStorage(settings.data_dir, settings.videos_dir)
    return BucketStorage(settings.storage, settings.staging_dir, settings.download_url_ttl_s, s3_client())


def s3_client() -> S3Client:
    """A client configured as boto3 configures itself (AWS_ENDPOINT_URL, credentials, region, profiles);
    SigV4 always, as presigned links that expire need it."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("s3", config=Config(signature_version="s3v4"))


@dataclass(frozen=True, slots=True)
class FolderStorage:
    """`videos/{job_id}.{attempt}.mp4` under the data folder (every process must see the same one)."""

    data_dir: Path
    videos_dir: Path

    def check(self) -> None:
        """The folder's writability is checked at start with the rest of the data folder (disk.check_writable)."""

    def sweep(self, older_than_s: float) -> int:
        partial = [*self.videos_dir.glob(".*.partial.mp4"), *self.videos_dir.glob(".*.partial.webp")]
        return _remove_older(partial, older_than_s)  # never a finished video or poster

    def staging_path(self, record: JobRecord) -> Path:
        return attempt_video_path(self.videos_dir, record.job_id)

    def keep(self, staged: Path, record: JobRecord) -> str:
        return str(staged.relative_to(self.data_dir))  # written in place, atomically (video.write_mp4)

    def keep_poster(self, record: JobRecord, video: str, data: bytes) -> None:
        path = recorded_video(self.videos_dir, record.job_id, video)
        if path is None:
            raise ValueError(f"not a video of job {record.job_id}: {video!r}")
        poster = path.with_name(poster_of(path.name))
        _write_whole(poster, data, poster.with_name(f".{path.stem}.partial.webp"))

    def drop(self, record: JobRecord, name: str) -> None:
        path = recorded_video(self.videos_dir, record.job_id, name)
        if path is not None:
            _remove_video(path)

    def remove(self, record: JobRecord) -> None:
        for video in job_videos(self.videos_dir, record.job_id):
            _remove_video(video)
        self.drop_checkpoint(record)

    def has(self, record: JobRecord) -> bool:
        return self.locate(record) is not None

    def locate(self, record: JobRecord, method: Method = "GET") -> StoredFile | None:
        """The file, while it is there (a disk cleaned by hand, say, leaves none)."""
        path = recorded_video(self.videos_dir, record.job_id, record.video_path)
        return StoredFile(path) if path is not None and path.is_file() else None

    def locate_poster(self, record: JobRecord, method: Method = "GET") -> StoredFile | None:
        video = self.locate(record)
        poster = video.path.with_name(poster_of(video.path.name)) if video is not None else None
        return StoredFile(poster) if poster is not None and poster.is_file() else None

    def save_checkpoint(self, record: JobRecord, data: bytes) -> None:
        """Written beside, then renamed over the last: a worker killed mid-write leaves the last one whole."""
        path = self._checkpoint_path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_whole(path, data, path.with_name(f".{path.name}.partial"))

    def load_checkpoint(self, record: JobRecord) -> bytes | None:
        try:
            return self._checkpoint_path(record).read_bytes()
        except FileNotFoundError:
            return None

    def drop_checkpoint(self, record: JobRecord) -> None:
        self._checkpoint_path(record).unlink(missing_ok=True)

    def _checkpoint_path(self, record: JobRecord) -> Path:
        return self.data_dir / "checkpoints" / checkpoint_name(record)


@dataclass(frozen=True, slots=True)
class BucketStorage:
    """`{prefix}{account folder}/{job_id}.{attempt}.mp4` in an S3 bucket, given out as presigned links.

    The account folder is a hash of the account's id, so a key names no account; job ids are random, so
    no key can be guessed from another account's view.
    """

    url: BucketURL
    staging_dir: Path
    link_ttl_s: int
    client: S3Client
    part_bytes: int = PART_BYTES

    def check(self) -> None:
        with self._calling("reached"):
            self.client.head_bucket(Bucket=self.url.bucket)

    def sweep(self, older_than_s: float) -> int:
        return _remove_older(self.staging_dir.glob("*.mp4"), older_than_s)  # partial files (.*.mp4) too

    def staging_path(self, record: JobRecord) -> Path:
        return attempt_video_path(self.staging_dir, record.job_id)

    def keep(self, staged: Path, record: JobRecord) -> str:
        """Upload (in parts, when large), then remove the staged file whatever happened. A failed upload is
        aborted by boto3, so no object appears under the name."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(record, staged.name)
        transfer = TransferConfig(multipart_threshold=self.part_bytes, multipart_chunksize=self.part_bytes)
        extra = {"ContentType": "video/mp4", "ContentDisposition": f'inline; filename="mochi-{record.job_id}.mp4"'}
        try:
            self.client.upload_file(str(staged), self.url.bucket, key, ExtraArgs=extra, Config=transfer)
        except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
            raise VideoNotStored(f"the video could not be uploaded to the object store: {_reason(exc)}") from None
        finally:
            staged.unlink(missing_ok=True)
        return key

    def keep_poster(self, record: JobRecord, video: str, data: bytes) -> None:
        """One PUT, beside the video's object (StorageUnusable when it fails: the video stays without one)."""
        if not self._owned(record, video):
            raise ValueError(f"not a video of job {record.job_id}: {video!r}")
        with self._calling("written"):
            self.client.put_object(Bucket=self.url.bucket, Key=poster_of(video), Body=data, ContentType="image/webp")

    def drop(self, record: JobRecord, name: str) -> None:
        """Best effort: an object left behind is under the job's prefix, so `remove` takes it later."""
        try:
            with self._calling("written"):
                if self._owned(record, name):
                    self.client.delete_object(Bucket=self.url.bucket, Key=poster_of(name))
                    self.client.delete_object(Bucket=self.url.bucket, Key=name)
        except StorageUnusable as exc:
            log.warning(
                "job %s: this attempt's video stays in the store until the job is deleted: %s", record.job_id, exc
            )

    def remove(self, record: JobRecord) -> None:
        """Every video and poster under the job's own prefix (an attempt that uploaded, then died before it
        could claim the job, left one the record never named)."""
        prefix = self._key(record, f"{record.job_id}.")
        with self._calling("written"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.url.bucket, Prefix=prefix)
            for page in pages:
                for listed in page.get("Contents", []):
                    if self._owned_file(record, listed["Key"]):
                        self.client.delete_object(Bucket=self.url.bucket, Key=listed["Key"])
            self.client.delete_object(Bucket=self.url.bucket, Key=self._checkpoint_key(record))

    def has(self, record: JobRecord) -> bool:
        """Trusts the record: a job is COMPLETED only once its upload succeeded, and its objects go with
        its record. (Asking the store would cost a round trip per status poll.)"""
        return record.video_path is not None and self._owned(record, record.video_path)

    def locate(self, record: JobRecord, method: Method = "GET") -> StoredLink | None:
        if not self.has(record):
            return None
        return self._link(str(record.video_path), method)

    def locate_poster(self, record: JobRecord, method: Method = "GET") -> StoredLink | None:
        """Trusts the record as `has` does: a worker sets `has_poster` once the poster's PUT succeeded."""
        if not (record.has_poster and self.has(record)):
            return None
        return self._link(poster_of(str(record.video_path)), method)

    def _link(self, key: str, method: Method) -> StoredLink:
        operation = "head_object" if method == "HEAD" else "get_object"  # the method is part of the signature
        url = self.client.generate_presigned_url(
            operation, Params={"Bucket": self.url.bucket, "Key": key}, ExpiresIn=self.link_ttl_s
        )
        return StoredLink(url)

    def save_checkpoint(self, record: JobRecord, data: bytes) -> None:
        """One PUT: S3 makes an object visible whole or not at all."""
        with self._calling("written"):
            self.client.put_object(Bucket=self.url.bucket, Key=self._checkpoint_key(record), Body=data)

    def load_checkpoint(self, record: JobRecord) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            with self._calling("read"):
                try:
                    answer = self.client.get_object(Bucket=self.url.bucket, Key=self._checkpoint_key(record))
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                        return None
                    raise
                return bytes(answer["Body"].read())
        except StorageUnusable as exc:  # rendering from the start is always possible
            log.warning("job %s: its checkpoint cannot be read; rendering afresh: %s", record.job_id, exc)
            return None

    def drop_checkpoint(self, record: JobRecord) -> None:
        try:
            with self._calling("written"):
                self.client.delete_object(Bucket=self.url.bucket, Key=self._checkpoint_key(record))
        except StorageUnusable as exc:
            log.warning("job %s: its checkpoint stays in the store: %s", record.job_id, exc)

    def _checkpoint_key(self, record: JobRecord) -> str:
        return f"{self.url.prefix}checkpoints/{checkpoint_name(record)}"

    def _calling(self, verb: str) -> contextlib.AbstractContextManager[None]:
        return calling_store(self.url.bucket, verb)

    def _key(self, record: JobRecord, name: str) -> str:
        return f"{self.url.prefix}{account_folder(record.account_id)}/{name}"

    def _owned_file(self, record: JobRecord, key: str) -> bool:
        """Whether `key` is one of the job's videos, or one's poster."""
        return self._owned(record, key.removesuffix(".webp") + ".mp4" if key.endswith(".webp") else key)

    def _owned(self, record: JobRecord, key: str) -> bool:
        """Whether `key` is one of the job's videos, in the job's own folder."""
        name = key.rpartition("/")[2]
        match = VIDEO_NAME.fullmatch(name)
        return match is not None and match["job_id"] == record.job_id and key == self._key(record, name)


@contextlib.contextmanager
def calling_store(bucket: str, verb: str) -> Iterator[None]:
    """boto3's errors as StorageUnusable, in one line an operator can act on."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnusable(
            f"the object store's bucket {bucket!r} cannot be {verb} ({_reason(exc)}); check "
            "MOCHI_STORAGE_URL and boto3's settings (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        ) from None


def _remove_video(path: Path) -> None:
    """A video file and its poster beside it, the poster first: no poster outlives its video."""
    path.with_name(poster_of(path.name)).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _write_whole(path: Path, data: bytes, partial: Path) -> None:
    """Written beside as `partial`, then renamed over `path`: a process killed mid-write leaves no half file."""
    partial.write_bytes(data)
    os.replace(partial, path)


def _remove_older(paths: Iterable[Path], older_than_s: float) -> int:
    cutoff, removed = time.time() - older_than_s, 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # another worker of this host swept it first
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def checkpoint_name(record: JobRecord) -> str:
    """`{job_id}.safetensors`, for a job id as jobs are given: a record edited in Redis names no other file."""
    if JOB_ID.fullmatch(record.job_id) is None:
        raise ValueError(f"not a job id: {record.job_id!r}")
    return f"{record.job_id}.safetensors"


def account_folder(account_id: str) -> str:
    """The account's folder in the bucket: a hash, so listing the bucket shows no account names."""
    return hashlib.sha256(account_id.encode()).hexdigest()[:32]


def _reason(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc) or type(exc).__name__
