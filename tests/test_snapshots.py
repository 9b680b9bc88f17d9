"""Snapshots: every record and account written beside the videos, and put back onto an empty server."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import imageio.v3 as iio
import pytest
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from mochi_app.connections import recorded_url
from mochi_app.guests import GUEST_SECRET_FILE
from mochi_app.maintenance import start_snapshots
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.snapshots import (
    KEPT_KEY,
    SLOTS,
    FolderPlace,
    Snapshot,
    Snapshots,
    SnapshotUnusable,
    restore_snapshot,
    snapshot_place,
    take_snapshot,
)
from mochi_app.store import FINISHED_KEY, GUESTS_FINISHED_KEY, JobStore
from tests.harness import SMALL, Children, wait_for, worker_env
from tests.s3_servers import S3Server, start_s3_server
from tests.test_retention import job_in


@pytest.fixture
def server(children: Children, tmp_path: Path) -> Redis:
    """A queue server of this test's own: snapshots read and restore whole servers."""
    return Redis.from_url(children.queue_server(tmp_path / "server"))


@pytest.fixture
def empty_server(children: Children, tmp_path: Path) -> Redis:
    return Redis.from_url(children.queue_server(tmp_path / "empty-server"))


def a_studio(redis: Redis) -> dict[str, JobRecord]:
    store = JobStore(redis)
    jobs = {
        "done": job_in(store, "painter", JobStatus.COMPLETED, finished_days_ago=1),
        "failed": job_in(store, "painter", JobStatus.FAILED, finished_days_ago=2),
        "guest's": job_in(store, "guest-0123", JobStatus.COMPLETED, finished_days_ago=1),
        "waiting": job_in(store, "painter", JobStatus.PENDING),
        "running": job_in(store, "painter", JobStatus.RUNNING),
    }
    stopping = job_in(store, "painter", JobStatus.RUNNING)
    jobs["cancelled while running"] = store.update(
        stopping.job_id, lambda r: r.model_copy(update={"cancel_requested": True})
    )  # type: ignore[assignment]
    return jobs


def test_a_snapshot_brings_back_every_job_gallery_and_account_onto_an_empty_server(
    server: Redis, empty_server: Redis, settings: Settings, tmp_path: Path
) -> None:
    jobs = a_studio(server)
    accounts = AccountStore(server)
    _, key = accounts.create("painter")
    accounts.create("gone")
    accounts.revoke("gone")
    (tmp_path / "old" / GUEST_SECRET_FILE).parent.mkdir()
    (tmp_path / "old" / GUEST_SECRET_FILE).write_text("ab" * 32)

    snapshot = Snapshot.decode(take_snapshot(server, tmp_path / "old").encode())
    queue = JobQueue(empty_server, replace(settings, data_dir=tmp_path / "new"))
    restored = restore_snapshot(queue, snapshot, tmp_path / "new")

    assert (restored.jobs, restored.requeued, restored.accounts) == (6, 2, 2)
    store = JobStore(empty_server)
    for name in ("done", "failed", "guest's"):
        assert store.get(jobs[name].job_id) == jobs[name], name
    for name in ("waiting", "running"):
        again = store.get(jobs[name].job_id)
        assert again is not None and again.status is JobStatus.PENDING and again.worker_id is None
    assert queue.rq.job_ids == [jobs["waiting"].job_id, jobs["running"].job_id]  # in the order they came
    cancelled = store.get(jobs["cancelled while running"].job_id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    gallery = store.list_for_account("painter", limit=10).records
    assert {record.job_id for record in gallery} == {r.job_id for n, r in jobs.items() if n != "guest's"}
    assert [r.created_at for r in gallery] == sorted((r.created_at for r in gallery), reverse=True)
    assert empty_server.zscore(FINISHED_KEY, jobs["done"].job_id) == jobs["done"].finished_at
    assert empty_server.zscore(GUESTS_FINISHED_KEY, jobs["guest's"].job_id) is not None  # guests' retention
    after = AccountStore(empty_server)
    assert after.by_key(key) is not None and after.by_key(key).name == "painter"  # type: ignore[union-attr]
    assert after.get("gone") is not None and after.get("gone").revoked_at is not None  # type: ignore[union-attr]
    assert (tmp_path / "new" / GUEST_SECRET_FILE).read_text() == "ab" * 32  # guests keep their galleries
    assert (tmp_path / "new" / GUEST_SECRET_FILE).stat().st_mode & 0o077 == 0
    assert empty_server.get(KEPT_KEY) is not None


def test_a_snapshot_goes_only_onto_an_empty_server(server: Redis, settings: Settings, tmp_path: Path) -> None:
    a_studio(server)
    snapshot = take_snapshot(server, tmp_path)
    with pytest.raises(SnapshotUnusable, match="already holds jobs or accounts"):
        restore_snapshot(JobQueue(server, settings), snapshot, tmp_path)


def test_a_torn_or_foreign_slot_is_skipped_and_the_older_whole_one_read(server: Redis, tmp_path: Path) -> None:
    snapshots = Snapshots(FolderPlace(tmp_path / "snapshots"))
    a_studio(server)
    snapshots.save(first := take_snapshot(server, tmp_path))
    a_studio(server)
    snapshots.save(second := take_snapshot(server, tmp_path))
    assert {path.name for path in (tmp_path / "snapshots").iterdir()} == set(SLOTS)
    latest = snapshots.latest()
    assert latest is not None and latest.taken_at == second.taken_at

    newer = next(path for path in (tmp_path / "snapshots").iterdir() if Snapshot.decode(path.read_bytes()) == second)
    newer.write_bytes(newer.read_bytes()[: len(newer.read_bytes()) // 2])  # an upload cut short
    assert snapshots.latest() == first
    newer.write_bytes(gzip.compress(b'{"format": 99, "taken_at": 1, "records": [], "accounts": []}'))
    assert snapshots.latest() == first
    snapshots.save(third := take_snapshot(server, tmp_path))  # into the unreadable slot, not over the whole one
    assert snapshots.latest() == Snapshot.decode(newer.read_bytes()) == third


def test_an_empty_server_never_restored_does_not_overwrite_a_snapshot_that_holds_jobs(
    server: Redis, empty_server: Redis, tmp_path: Path
) -> None:
    snapshots = Snapshots(FolderPlace(tmp_path / "snapshots"))
    a_studio(server)
    assert snapshots.keep(server, tmp_path)  # a server holding jobs is kept
    kept = snapshots.latest()
    assert kept is not None and len(kept.records) == 6

    for _ in SLOTS:  # the disk was lost and nothing restored it: both slots stay as they were
        assert not snapshots.keep(empty_server, tmp_path)
    assert snapshots.latest() == kept

    empty_server.set(KEPT_KEY, "new")  # an operator's fresh start, or a restore
    assert snapshots.keep(empty_server, tmp_path)
    latest = snapshots.latest()
    assert latest is not None and latest.records == []


def test_snapshots_live_beside_the_videos_in_the_bucket(
    bucket_settings: Settings, s3_server: S3Server, server: Redis
) -> None:
    a_studio(server)
    snapshots = Snapshots(snapshot_place(bucket_settings))
    assert snapshots.latest() is None
    snapshots.save(saved := take_snapshot(server, bucket_settings.data_dir))
    assert bucket_settings.storage is not None
    listed = s3_server.client().list_objects_v2(Bucket=bucket_settings.storage.bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"videos/snapshots/{SLOTS[0]}"]
    assert snapshots.latest() == saved


def test_the_web_snapshots_every_interval(server: Redis, settings: Settings, tmp_path: Path) -> None:
    a_studio(server)
    quick = replace(settings, data_dir=tmp_path, snapshot_interval_s=1)
    stop = start_snapshots(JobQueue(server, quick))
    assert stop is not None
    try:
        snapshots = Snapshots(snapshot_place(quick))
        wait_for(lambda: (latest := snapshots.latest()) is not None and len(latest.records) == 6, 30, "a snapshot")
        a_studio(server)
        wait_for(lambda: (latest := snapshots.latest()) is not None and len(latest.records) == 12, 30, "the next")
    finally:
        stop.set()
    assert start_snapshots(JobQueue(server, replace(quick, snapshot_interval_s=0))) is None


@pytest.mark.slow
def test_a_studio_that_loses_its_whole_disk_gets_every_job_gallery_and_video_back(
    children: Children, tmp_path: Path
) -> None:
    """As a Space restarts: the videos and snapshots in an object store, everything local wiped."""
    s3 = start_s3_server("nanio", tmp_path / "s3", bucket="space-bucket")
    children.defer(s3.stop)
    # No periodic snapshot but the empty one at start: what comes back was saved as app.py stopped.
    env = {"MOCHI_STORAGE_URL": "s3://space-bucket/studio", "MOCHI_SNAPSHOT_INTERVAL_S": "3600", **s3.env()}
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = children.app(tmp_path / "first", **env)
    key = AccountStore(Redis.from_url(recorded_url(first.data_dir / "redis"))).create("painter")[1]
    jobs = {
        who: httpx.post(f"{first.url}/generate", json={"prompt": f"{who}'s lighthouse", **SMALL}, headers=headers)
        .raise_for_status()
        .json()["job_id"]
        for who, headers in (("local", {}), ("painter", {"Authorization": f"Bearer {key}"}))
    }
    headers = {"local": {}, "painter": {"Authorization": f"Bearer {key}"}}

    def all_done(url: str) -> bool:
        return all(
            httpx.get(f"{url}/status/{job_id}", headers=headers[who]).json()["status"] == "COMPLETED"
            for who, job_id in jobs.items()
        )

    wait_for(lambda: all_done(first.url), 240, "both jobs to complete")
    first.child.stop()
    shutil.rmtree(first.data_dir)  # the server, its append-only file, the guest secret: all gone

    second = children.app(tmp_path / "second", **env)
    assert "restored 2 job(s) (0 to run again) and 1 account(s)" in second.child.log
    assert all_done(second.url)
    for who, job_id in jobs.items():
        gallery = httpx.get(f"{second.url}/jobs/{who}", headers=headers[who]).json()["jobs"]
        assert [job["job_id"] for job in gallery] == [job_id]
        video = httpx.get(f"{second.url}/download/{job_id}", headers=headers[who], follow_redirects=True)
        assert video.status_code == 200 and iio.imread(video.content, extension=".mp4").shape[0] == 31
    assert list(second.data_dir.rglob("*.mp4")) == []


@pytest.mark.slow
def test_backup_and_restore_through_the_command_line(children: Children, tmp_path: Path, settings: Settings) -> None:
    old = Redis.from_url(url := children.queue_server(tmp_path / "old"))
    jobs = a_studio(old)
    env = worker_env(replace(settings, redis_url=url, data_dir=tmp_path / "data"))

    def mochi(*args: str, server: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mochi_app", *args]
        return subprocess.run(
            command, env={**env, "MOCHI_REDIS_URL": server}, capture_output=True, text=True, timeout=120, check=False
        )

    backup = tmp_path / "backups" / "studio.json.gz"
    made = mochi("backup", str(backup), server=url)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"wrote {len(jobs)} job(s) and 0 account(s) to {backup}"

    new_url = children.queue_server(tmp_path / "new")
    put_back = mochi("restore", str(backup), server=new_url)
    assert put_back.returncode == 0, put_back.stderr
    assert put_back.stdout.strip() == "restored 6 job(s) (2 to run again) and 0 account(s)"
    assert JobStore(Redis.from_url(new_url)).get(jobs["done"].job_id) == jobs["done"]

    again = mochi("restore", str(backup), server=new_url)
    assert (again.returncode, again.stdout) == (2, "")
    assert again.stderr.strip().endswith("restore only onto an empty one")
    missing = mochi("restore", str(tmp_path / "nothing.json.gz"), server=new_url)
    assert missing.returncode == 2 and "there is no snapshot at" in missing.stderr
    assert "Traceback" not in again.stderr + missing.stderr
