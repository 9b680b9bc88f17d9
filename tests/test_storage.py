"""Videos in an object store (MOCHI_STORAGE_URL=s3://…), against two real S3 servers on loopback."""

from __future__ import annotations

import calendar
import io
import os
import re
import sys
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import httpx
import imageio.v3 as iio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from mochi_app.config import BucketURL, Settings
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.renderer import NO_CHECKPOINTS, Checkpointing, Rendering, StepCallback
from mochi_app.retention import DAY_S, expire_finished_jobs
from mochi_app.runner import JobRunner
from mochi_app.schemas import GenerationRequest
from mochi_app.stages import Stage
from mochi_app.storage import (
    BucketStorage,
    FolderStorage,
    VideoNotStored,
    VideoStorage,
    account_folder,
    open_storage,
)
from mochi_app.studio import Studio
from mochi_app.tokens import TokenCounter
from mochi_app.video import poster_of
from mochi_app.web import create_app
from mochi_app.worker_state import WorkerStates
from tests.harness import Children, new_account, worker_env
from tests.s3_servers import S3Server

TINY = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}


class StillRenderer:
    """Frames without a model, each step reported: what the runner does around a rendering is under test."""

    model_name = "still"

    def render(
        self, request: GenerationRequest, on_step: StepCallback, checkpointing: Checkpointing = NO_CHECKPOINTS
    ) -> Rendering:
        for step in range(1, request.num_inference_steps + 1):
            on_step(step, request.num_inference_steps)
        ramp = np.linspace(0, 255, request.width, dtype=np.uint8)
        frames = np.broadcast_to(ramp[None, None, :, None], (7, request.height, request.width, 3)).copy()
        return Rendering(frames=frames, denoise_s=0.01, decode_s=0.01)

    made_with: ClassVar[dict[str, Any]] = {"model": {"id": "still", "revision": None}}

    def release_memory(self) -> None:
        pass


def objects(s3: S3Server, settings: Settings) -> list[str]:
    assert settings.storage is not None
    listed = s3.client().list_objects_v2(Bucket=settings.storage.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def stored(*records: JobRecord) -> list[str]:
    """The objects finished jobs keep: each one's video and its poster beside it."""
    return sorted(
        name for record in records if record.video_path for name in (record.video_path, poster_of(record.video_path))
    )


def mp4s_on_disk(settings: Settings) -> list[Path]:
    return sorted(settings.data_dir.rglob("*.mp4")) if settings.data_dir.exists() else []


def render_one(settings: Settings, redis: Redis, count_tokens: TokenCounter, account: str) -> JobRecord:
    queue = JobQueue(redis, settings, count_tokens)
    job = queue.submit(account, {"prompt": "a lighthouse at dusk", **TINY})
    queue.rq.remove(job.job_id)  # this test plays the worker itself
    runner = JobRunner(queue, StillRenderer(), settings, open_storage(settings), worker_id="w")
    runner.run(job.job_id)
    record = queue.store.get(job.job_id)
    assert record is not None
    return record


def test_a_job_is_completed_once_its_video_is_in_the_bucket_and_on_no_disk(
    bucket_settings: Settings, s3_server: S3Server, redis: Redis, count_tokens: TokenCounter
) -> None:
    account = new_account()
    record = render_one(bucket_settings, redis, count_tokens, account)

    assert (record.status, record.error) == (JobStatus.COMPLETED, None)
    assert record.video_path is not None
    assert re.fullmatch(rf"videos/{account_folder(account)}/{record.job_id}\.[0-9a-f]{{12}}\.mp4", record.video_path)
    assert account not in record.video_path
    assert objects(s3_server, bucket_settings) == stored(record) and record.has_poster
    assert record.timings.upload_s is not None and record.timings.upload_s >= 0
    assert bucket_settings.storage is not None
    body = s3_server.client().get_object(Bucket=bucket_settings.storage.bucket, Key=record.video_path)["Body"].read()
    assert iio.imread(body, extension=".mp4").shape == (7, 64, 64, 3)
    assert mp4s_on_disk(bucket_settings) == []


def test_an_upload_that_fails_ends_the_job_failed_and_leaves_nothing(
    bucket_settings: Settings, s3_server: S3Server, redis: Redis, count_tokens: TokenCounter
) -> None:
    assert bucket_settings.storage is not None
    s3_server.client().delete_bucket(Bucket=bucket_settings.storage.bucket)  # gone while the job rendered

    record = render_one(bucket_settings, redis, count_tokens, new_account())

    assert record.status is JobStatus.FAILED and record.video_path is None
    assert record.error is not None and record.error.startswith("the video could not be uploaded to the object store")
    assert "NoSuchBucket" in record.error
    assert mp4s_on_disk(bucket_settings) == []


def test_an_upload_interrupted_between_parts_leaves_no_object(
    bucket_settings: Settings, s3_server: S3Server, tmp_path: Path
) -> None:
    """A large video goes up in parts; one that fails midway is aborted, so the key never shows."""
    assert bucket_settings.storage is not None
    client = s3_server.client()
    parts_sent = 0

    def fail_the_second_part(**_: Any) -> None:
        nonlocal parts_sent
        parts_sent += 1
        if parts_sent == 2:
            raise ConnectionResetError("the link went down")

    client.meta.events.register("before-send.s3.UploadPart", fail_the_second_part)
    storage = BucketStorage(bucket_settings.storage, tmp_path, 60, client, part_bytes=5 * 2**20)
    staged = tmp_path / "0123abcd-0000-4000-8000-000000000000.0123456789ab.mp4"
    staged.write_bytes(np.random.default_rng(0).bytes(12 * 2**20))
    record = JobRecord.model_validate(
        {
            "job_id": "0123abcd-0000-4000-8000-000000000000",
            "account_id": "someone",
            "request": {"prompt": "p"},
            "num_frames": 7,
            "progress": {"total": 1},
            "created_at": 0.0,
        }
    )

    with pytest.raises(VideoNotStored, match="could not be uploaded"):
        storage.keep(staged, record)

    assert parts_sent >= 2
    assert not staged.exists()
    assert objects(s3_server, bucket_settings) == []


def web(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), base_url="http://127.0.0.1", follow_redirects=False)


def test_the_owner_is_sent_to_a_link_that_expires_and_others_get_the_missing_job_404(
    bucket_settings: Settings,
    s3_server: S3Server,
    redis: Redis,
    count_tokens: TokenCounter,
    two_accounts: tuple[str, str, str],
) -> None:
    owner, owner_key, stranger_key = two_accounts
    record = render_one(bucket_settings, redis, count_tokens, owner)
    with web(bucket_settings) as http:
        as_owner = {"Authorization": f"Bearer {owner_key}"}
        status = http.get(f"/status/{record.job_id}", headers=as_owner).json()
        assert status["download_url"] == f"/download/{record.job_id}"

        answer = http.get(f"/download/{record.job_id}", headers=as_owner)
        assert answer.status_code == 307 and answer.headers["cache-control"] == "private, no-store"
        link = answer.headers["location"]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
        assert query["X-Amz-Expires"] == [str(bucket_settings.download_url_ttl_s)]
        assert "X-Amz-Signature" in query

        whole = httpx.get(link)
        assert whole.status_code == 200 and iio.imread(whole.content, extension=".mp4").shape == (7, 64, 64, 3)
        part = httpx.get(link, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]

        head = http.head(f"/download/{record.job_id}", headers=as_owner)
        assert head.status_code == 307
        assert httpx.head(head.headers["location"]).headers["content-length"] == str(len(whole.content))

        poster = http.get(f"/thumbnail/{record.job_id}", headers=as_owner)
        assert poster.status_code == 307 and poster.headers["cache-control"] == "private, no-store"
        image = httpx.get(poster.headers["location"])
        assert image.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)

        for headers in ({"Authorization": f"Bearer {stranger_key}"}, {}):
            for path in (f"/download/{record.job_id}", f"/thumbnail/{record.job_id}"):
                stranger = http.get(path, headers=headers)
                assert stranger.status_code in {401, 404} and "location" not in stranger.headers
        assert http.get(f"/download/{record.job_id}", headers={"Authorization": f"Bearer {stranger_key}"}).json() == {
            "detail": f"no job with id {record.job_id!r}"
        }


@pytest.mark.parametrize("s3_server", ["nanio"], indirect=True)  # localbucket checks no signatures
def test_a_tampered_or_expired_link_is_refused_by_the_store(
    bucket_settings: Settings,
    s3_server: S3Server,
    redis: Redis,
    count_tokens: TokenCounter,
    two_accounts: tuple[str, str, str],
) -> None:
    owner, owner_key, _ = two_accounts
    record = render_one(bucket_settings, redis, count_tokens, owner)

    def link(settings: Settings) -> str:
        with web(settings) as http:
            answer = http.get(f"/download/{record.job_id}", headers={"Authorization": f"Bearer {owner_key}"})
        return answer.headers["location"]

    good = link(bucket_settings)
    assert httpx.get(good).status_code == 200
    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", good)
    assert signature is not None
    flipped = "0" if signature[1][-1] != "0" else "1"
    ttl = f"X-Amz-Expires={bucket_settings.download_url_ttl_s}"
    tampered = [
        good.replace(signature[1], signature[1][:-1] + flipped),
        good.replace(record.job_id, record.job_id[:-1] + ("0" if record.job_id[-1] != "0" else "1")),
        good.replace(ttl, "X-Amz-Expires=604800"),
    ]
    for url in tampered:
        refused = httpx.get(url)
        assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text, url

    # A link that works one second: once that has passed (X-Amz-Date has whole seconds), the store refuses it.
    short = link(replace(bucket_settings, download_url_ttl_s=1))
    signed = re.search(r"X-Amz-Date=(\w+)", short)
    assert signed is not None
    expired_at = calendar.timegm(time.strptime(signed[1], "%Y%m%dT%H%M%SZ")) + 1 + 1
    while time.time() <= expired_at:
        time.sleep(expired_at - time.time() + 0.05)
    late = httpx.get(short)
    assert late.status_code == 403 and "expired" in late.text, late.text


def test_delete_and_retention_leave_no_object_behind(
    bucket_settings: Settings, s3_server: S3Server, redis: Redis, count_tokens: TokenCounter
) -> None:
    account = new_account()
    deleted, expired, kept = (render_one(bucket_settings, redis, count_tokens, account) for _ in range(3))
    assert bucket_settings.storage is not None
    client, orphans = s3_server.client(), {}
    for record in (deleted, expired):  # an attempt that uploaded, then died before it could claim the job
        assert record.video_path is not None
        orphans[record.job_id] = record.video_path.rsplit(".", 2)[0] + ".fedcba987654.mp4"
        client.put_object(Bucket=bucket_settings.storage.bucket, Key=orphans[record.job_id], Body=b"an orphan")
    assert len(objects(s3_server, bucket_settings)) == 8

    studio = Studio(redis, bucket_settings)
    studio.delete(account, deleted.job_id)
    assert objects(s3_server, bucket_settings) == sorted([*stored(kept, expired), orphans[expired.job_id]])

    # Retention, a day and a half after the last of them ended, with a one-day period.
    later = max(record.finished_at or 0 for record in (expired, kept)) + 1.5 * DAY_S
    assert expire_finished_jobs(studio.store, studio.videos, 1, now=later) >= 2
    assert studio.store.get(kept.job_id) is None
    assert objects(s3_server, bucket_settings) == []


class OvertakenRenderer(StillRenderer):
    """Renders while another worker (this one frozen past its heartbeat) finishes the same job first."""

    def __init__(self, queue: JobQueue, job_id: str, winner_key: str) -> None:
        self.queue, self.job_id, self.winner_key = queue, job_id, winner_key

    def render(
        self, request: GenerationRequest, on_step: StepCallback, checkpointing: Checkpointing = NO_CHECKPOINTS
    ) -> Rendering:
        rendering = super().render(request, on_step, checkpointing)
        self.queue.store.update(
            self.job_id,
            lambda r: r.model_copy(
                update={"status": JobStatus.COMPLETED, "worker_id": "winner", "video_path": self.winner_key}
            ),
        )
        return rendering


def test_a_stale_attempt_drops_only_its_own_object(
    bucket_settings: Settings, s3_server: S3Server, redis: Redis, count_tokens: TokenCounter
) -> None:
    assert bucket_settings.storage is not None
    account = new_account()
    queue = JobQueue(redis, bucket_settings, count_tokens)
    job = queue.submit(account, {"prompt": "two workers, one job", **TINY})
    queue.rq.remove(job.job_id)
    winner_key = f"videos/{account_folder(account)}/{job.job_id}.aaaaaaaaaaaa.mp4"
    s3_server.client().put_object(Bucket=bucket_settings.storage.bucket, Key=winner_key, Body=b"the finished video")

    renderer = OvertakenRenderer(queue, job.job_id, winner_key)
    JobRunner(queue, renderer, bucket_settings, open_storage(bucket_settings), worker_id="stale").run(job.job_id)

    record = queue.store.get(job.job_id)
    assert record is not None and (record.status, record.worker_id, record.video_path) == (
        JobStatus.COMPLETED,
        "winner",
        winner_key,
    )
    assert objects(s3_server, bucket_settings) == [winner_key]
    assert mp4s_on_disk(bucket_settings) == []


@pytest.mark.slow
def test_a_worker_that_cannot_reach_the_bucket_says_so_before_loading_the_model(
    bucket_settings: Settings, s3_server: S3Server, children: Children, tmp_path: Path
) -> None:
    missing = replace(bucket_settings, storage=BucketURL("no-such-bucket", ""))
    command = [sys.executable, "-m", "mochi_app", "worker"]
    worker = children.launch(command, worker_env(missing, **s3_server.env()), tmp_path / "worker.log")
    assert worker.process.wait(120) == 1
    assert "the object store's bucket 'no-such-bucket' cannot be reached" in worker.log
    assert "Traceback" not in worker.log and "loading" not in worker.log
    [state] = WorkerStates(Redis.from_url(missing.redis_url or ""), missing.queue_name, 15).all()
    assert state.stage is Stage.FAILED and "no-such-bucket" in (state.detail or "")


def test_a_killed_attempts_leftovers_are_swept_and_nothing_younger(tmp_path: Path, bucket_settings: Settings) -> None:
    """What a worker killed mid-encode or mid-upload left on its disk; a live attempt's files are younger."""
    record = JobRecord.model_validate(
        {"job_id": "0123abcd-0000-4000-8000-000000000000", "account_id": "a", "request": {"prompt": "p"},
         "num_frames": 7, "progress": {"total": 2}, "created_at": 0.0}
    )  # fmt: skip
    for storage, finished_stays in (
        (FolderStorage(tmp_path, tmp_path / "videos"), True),
        (open_storage(bucket_settings), False),
    ):
        old_video, young_video = storage.staging_path(record), storage.staging_path(record)
        old_partial = old_video.with_name(f".{old_video.stem}.partial.mp4")
        young_partial = young_video.with_name(f".{young_video.stem}.partial.mp4")
        # A poster is written beside the video in the videos folder, and goes up from memory to a bucket.
        old_poster = old_video.with_name(f".{old_video.stem}.partial.webp")
        for path in (old_video, young_video, old_partial, young_partial, old_poster):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"mp4")
        for path in (old_video, old_partial, old_poster):
            os.utime(path, (time.time() - 7200, time.time() - 7200))

        swept = storage.sweep(older_than_s=3600)

        assert not old_partial.exists() and young_partial.exists() and young_video.exists()
        assert old_video.exists() is finished_stays  # in the videos folder, a finished video is the job's
        assert old_poster.exists() is not finished_stays
        assert swept == 2  # the partial video, and the partial poster or the staged video


def checkpoint_round_trip(videos: VideoStorage, record: JobRecord) -> None:
    """Saved, replaced whole by the next, read back, and gone with the job."""
    videos.save_checkpoint(record, b"step 4")
    videos.save_checkpoint(record, b"step 8")
    assert videos.load_checkpoint(record) == b"step 8"
    videos.drop_checkpoint(record)
    assert videos.load_checkpoint(record) is None
    videos.save_checkpoint(record, b"step 12")
    videos.remove(record)  # delete and retention
    assert videos.load_checkpoint(record) is None
    with pytest.raises(ValueError, match=re.escape("not a job id: '../../etc/passwd'")):
        videos.save_checkpoint(record.model_copy(update={"job_id": "../../etc/passwd"}), b"")


def test_a_checkpoint_in_the_bucket_is_replaced_read_and_removed_with_the_job(
    bucket_settings: Settings, s3_server: S3Server, redis: Redis, count_tokens: TokenCounter
) -> None:
    job = JobQueue(redis, bucket_settings, count_tokens).submit(new_account(), {"prompt": "kept", **TINY})
    videos = open_storage(bucket_settings)
    assert videos.load_checkpoint(job) is None
    videos.save_checkpoint(job, b"step 4")
    assert objects(s3_server, bucket_settings) == [f"videos/checkpoints/{job.job_id}.safetensors"]
    checkpoint_round_trip(videos, job)
    assert objects(s3_server, bucket_settings) == []


def test_a_checkpoint_in_the_data_folder_is_replaced_read_and_removed_with_the_job(
    settings: Settings, redis: Redis, count_tokens: TokenCounter, tmp_path: Path
) -> None:
    settings = replace(settings, data_dir=tmp_path)
    job = JobQueue(redis, settings, count_tokens).submit(new_account(), {"prompt": "kept", **TINY})
    videos = open_storage(settings)
    assert videos.load_checkpoint(job) is None
    videos.save_checkpoint(job, b"step 4")
    assert sorted(path.name for path in settings.checkpoints_dir.iterdir()) == [f"{job.job_id}.safetensors"]
    checkpoint_round_trip(videos, job)
    assert list(settings.checkpoints_dir.iterdir()) == []
