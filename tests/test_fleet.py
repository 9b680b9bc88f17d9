"""A fleet with no shared folder: queue and web, a worker and an S3 server on three hosts (network namespaces)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import imageio.v3 as iio
import pytest
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import BucketURL, Settings
from mochi_app.redis_server import server_binary
from mochi_app.storage import account_folder
from tests.harness import GENEROUS, SLOW, Child, Children, wait_for, worker_env
from tests.netns import Host, Network, namespaces_available
from tests.s3_servers import ACCESS_KEY, CLIENT_CONFIG, REGION, SECRET_KEY

pytestmark = pytest.mark.slow

PASSWORD = "fleet-queue-password"
BUCKET = "fleet-videos"
VALKEY_PORT, WEB_PORT, S3_PORT = 6379, 7860, 9000
HEARTBEAT_TTL_S = 4
QUICK = {"num_frames": 7, "height": 64, "width": 96, "num_inference_steps": 2}


class Fleet:
    """The three hosts and what runs on them; `client` is a fourth host that reaches the others over the link."""

    def __init__(self, network: Network, children: Children, tmp_path: Path) -> None:
        self.queue, self.worker_host, self.store = network.host("queue"), network.host("worker"), network.host("store")
        self.client = network.host("client")
        self.children, self.tmp_path = children, tmp_path
        self.redis_url = f"redis://:{PASSWORD}@{self.queue.address}:{VALKEY_PORT}/0"
        self.web_url = f"http://{self.queue.address}:{WEB_PORT}"
        self.s3_url = f"http://{self.store.address}:{S3_PORT}"
        self.key = ""

    def folder(self, name: str) -> Path:
        path = self.tmp_path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, host: Host, argv: list[str], env: dict[str, str], ready: Callable[[Child], bool]) -> Child:
        log = self.folder("logs") / f"{host.name.rsplit('-', 1)[1]}-{len(list(self.folder('logs').iterdir()))}.log"
        return self.children.child(host.command(argv), env, log, ready)

    def settings(self, host: Host) -> Settings:
        """Each host's own data folder; what they share is the queue server and the bucket."""
        return Settings(
            data_dir=self.folder(f"{host.name.rsplit('-', 1)[1]}-data"),
            redis_url=self.redis_url,
            storage=BucketURL(BUCKET, "studio/"),
            model="tiny",
            host=host.address,
            port=WEB_PORT,
            heartbeat_ttl_s=HEARTBEAT_TTL_S,
            queue_name="fleet",
            **GENEROUS,
        )

    def aws_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start_all(self) -> None:
        self.start(
            self.queue,
            [str(server_binary()), "--bind", self.queue.address, "--port", str(VALKEY_PORT), "--requirepass", PASSWORD,
             "--dir", str(self.folder("valkey")), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            {},
            lambda child: "Ready to accept connections" in child.log,
        )  # fmt: skip
        (self.folder("s3") / BUCKET).mkdir()  # a bucket is a folder to nanio
        self.start(
            self.store,
            [sys.executable, "-P", "-m", "nanio", "serve", "--data-dir", str(self.folder("s3")),
             "--host", self.store.address, "--port", str(S3_PORT), "--region", REGION],
            {"NANIO_ACCESS_KEY": ACCESS_KEY, "NANIO_SECRET_KEY": SECRET_KEY, "PYTHONUNBUFFERED": "1",
             "PATH": "/usr/bin:/bin"},
            lambda child: "Uvicorn running" in child.log,
        )  # fmt: skip
        self.key = self.queue.call(lambda: AccountStore(Redis.from_url(self.redis_url)).create("fleet")[1])
        web = worker_env(self.settings(self.queue), **self.aws_env())
        self.start(self.queue, [sys.executable, "-m", "mochi_app", "serve"], web, lambda c: "studio page at" in c.log)
        worker = worker_env(self.settings(self.worker_host), **self.aws_env())
        self.worker = self.start(
            self.worker_host, [sys.executable, "-m", "mochi_app", "worker"], worker, lambda c: "ready on queue" in c.log
        )

    def rest(self, method: str, path: str, **options: Any) -> httpx.Response:
        """A request to the web from the client host."""
        headers = {"Authorization": f"Bearer {self.key}"}
        return self.client.call(
            lambda: httpx.request(method, f"{self.web_url}{path}", headers=headers, timeout=30, **options)
        )

    def status(self, job_id: str) -> dict[str, Any]:
        answer = self.rest("GET", f"/status/{job_id}")
        assert answer.status_code == 200, answer.text
        status: dict[str, Any] = answer.json()
        return status

    def submit(self, params: dict[str, Any]) -> str:
        answer = self.rest("POST", "/generate", json=params)
        assert answer.status_code == 202, answer.text
        job_id: str = answer.json()["job_id"]
        return job_id

    def objects(self) -> dict[str, int]:
        """The videos in the bucket by key, with their sizes (the web's snapshots beside them left out)."""

        def listed() -> dict[str, int]:
            client = boto3.session.Session().client(
                "s3", endpoint_url=self.s3_url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                region_name=REGION, config=CLIENT_CONFIG,
            )  # fmt: skip
            contents = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
            return {item["Key"]: item["Size"] for item in contents if "/snapshots/" not in item["Key"]}

        return self.client.call(listed)

    def mp4s_on_any_disk(self) -> list[Path]:
        return sorted(
            path for path in self.tmp_path.rglob("*.mp4") if "s3" not in path.relative_to(self.tmp_path).parts
        )


@pytest.fixture
def fleet(children: Children, tmp_path: Path) -> Iterator[Fleet]:
    if not namespaces_available():
        pytest.fail("network namespaces need root and iproute2's ip (.ci/run installs it)")
    with Network(["queue", "worker", "store", "client"]) as network:
        started = Fleet(network, children, tmp_path)
        started.start_all()
        yield started
        children.stop_all()  # before the namespaces go: each process stops as it would on its host


def until_status(fleet: Fleet, job_id: str, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.update(fleet.status(job_id))
        return done(seen)

    wait_for(check, 300, what, interval_s=0.2)
    return seen


def test_jobs_go_from_the_web_host_to_the_worker_host_to_the_store_and_back_with_no_shared_folder(
    fleet: Fleet,
) -> None:
    jobs = [fleet.submit({"prompt": f"a paper boat, take {n}", **QUICK}) for n in range(3)]
    for job_id in jobs:
        until_status(fleet, job_id, lambda s: s["status"] == "COMPLETED", f"job {job_id} to complete")

    downloaded = 0
    for job_id in jobs:
        video = fleet.rest("GET", f"/download/{job_id}", follow_redirects=True)
        assert video.status_code == 200
        assert str(video.url).startswith(fleet.s3_url)  # fetched from the store's host, not the web's
        assert iio.imread(video.content, extension=".mp4").shape == (7, 64, 96, 3)
        downloaded += len(video.content)
    stored = fleet.objects()
    videos = [key for key in stored if key.endswith(".mp4")]
    assert sorted(key.rsplit("/", 1)[1].split(".")[0] for key in videos) == sorted(jobs)
    assert sorted(stored) == sorted([*videos, *(key.removesuffix(".mp4") + ".webp" for key in videos)])  # posters
    assert all(key.startswith(f"studio/{account_folder('fleet')}/") for key in stored)
    assert sum(stored[key] for key in videos) == downloaded
    assert fleet.mp4s_on_any_disk() == []
    print(json.dumps({"jobs_completed": len(jobs), "bytes_uploaded": sum(stored.values())}))


def test_a_worker_host_cut_off_mid_job_past_its_heartbeat_loses_nothing_and_completes_once(fleet: Fleet) -> None:
    long_job = fleet.submit({"prompt": "a storm over the harbour", **SLOW})
    until_status(fleet, long_job, lambda s: s["status"] == "RUNNING" and s["progress"]["step"] > 0, "the job to run")

    fleet.worker_host.cut()
    waiting = fleet.submit({"prompt": "submitted while the worker was away", **QUICK})  # the web is still up
    # The web's reaper sees the heartbeat lapse and puts the job back on the queue.
    requeued = until_status(fleet, long_job, lambda s: s["status"] == "PENDING", "the lost job to be re-queued")
    assert requeued["queue_position"] is not None
    fleet.worker_host.restore()

    done = until_status(fleet, long_job, lambda s: s["status"] == "COMPLETED", "the long job to complete")
    until_status(fleet, waiting, lambda s: s["status"] == "COMPLETED", "the waiting job to complete")
    for job_id in (long_job, waiting):
        video = fleet.rest("GET", f"/download/{job_id}", follow_redirects=True)
        assert video.status_code == 200 and iio.imread(video.content, extension=".mp4").shape[0] > 0
    assert fleet.status(long_job)["status"] == "COMPLETED" and done["error"] is None
    completions = fleet.worker.log.count(f"job {long_job}: completed")
    assert completions == 1, fleet.worker.log
    stored = sorted(key for key in fleet.objects() if long_job in key)
    assert len(stored) == 2 and stored[1] == stored[0].removesuffix(".mp4") + ".webp", stored  # one video, its poster
    assert fleet.mp4s_on_any_disk() == []
    print(json.dumps({"jobs_completed": 2, "objects_for_it": len(stored)}))
