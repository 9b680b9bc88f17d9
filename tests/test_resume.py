"""Resumable renders on real workers: a killed worker's job goes on from its checkpoint, a failed decode from
the saved latents, and the frames are those of an uninterrupted render."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mochi_app.config import Settings
from mochi_app.provenance import NoProvenance, read_provenance, request_of
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.video import write_mp4
from mochi_app.web import create_app
from tests.faulty_worker import DECODE_OUT_OF_MEMORY_CUE, HANG_CUE, HANGING_STEP
from tests.harness import SMALL, Child, Children, finished, new_account, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

STEPS = 12
EVERY = 2
RESUMABLE = {**SMALL, "num_inference_steps": STEPS, "seed": 1234}


def frames(settings: Settings, record: JobRecord) -> np.ndarray:
    return np.asarray(iio.imread(settings.data_dir / (record.video_path or "")))


def has_checkpoint(settings: Settings, job_id: str) -> bool:
    return (settings.checkpoints_dir / f"{job_id}.safetensors").is_file()


def wait_for_checkpoint_dropped(settings: Settings, job_id: str) -> None:
    """The worker drops a checkpoint after it writes the job's end (a crash between keeps it): wait for the drop."""
    wait_for(lambda: not has_checkpoint(settings, job_id), 60, f"job {job_id}'s checkpoint to be dropped")


def test_a_worker_killed_after_its_second_checkpoint_resumes_there_with_the_same_frames(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    settings = replace(settings, checkpoint_every_steps=EVERY)
    owner = new_account()
    request = {"prompt": f"a lighthouse at dusk {HANG_CUE}", **RESUMABLE}
    first = children.worker(settings, tmp_path / "first.log", module="tests.faulty_worker", MOCHI_HEARTBEAT_TTL_S="2")
    job = job_queue.submit(owner, request)

    def hanging() -> JobRecord | None:
        record = job_queue.store.get(job.job_id)
        return record if record is not None and record.progress.step == HANGING_STEP else None

    held = wait_for(hanging, 120, f"the first worker to hang after step {HANGING_STEP}")
    assert isinstance(held, JobRecord) and held.checkpoint_step == 2 * EVERY  # its second checkpoint
    assert has_checkpoint(settings, job.job_id)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()

    children.worker(settings, tmp_path / "second.log", MOCHI_HEARTBEAT_TTL_S="2")
    resumed = finished(job_queue, job.job_id)
    assert (resumed.status, resumed.attempts, resumed.resumed_from_step) == (JobStatus.COMPLETED, 2, 2 * EVERY)
    assert resumed.steps_run == HANGING_STEP + STEPS - 2 * EVERY < 2 * STEPS
    wait_for_checkpoint_dropped(settings, job.job_id)  # removed once the job ended

    whole = finished(job_queue, job_queue.submit(owner, request).job_id)  # the same request, never stopped
    assert (whole.status, whole.attempts, whole.resumed_from_step, whole.steps_run) == (
        JobStatus.COMPLETED,
        1,
        None,
        STEPS,
    )
    assert np.array_equal(frames(settings, resumed), frames(settings, whole))  # every pixel


def test_a_decode_out_of_memory_is_decoded_again_from_the_saved_latents_without_denoising_again(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    worker = children.worker(settings, tmp_path / "worker.log", module="tests.faulty_worker")
    owner = new_account()
    failing = job_queue.submit(owner, {"prompt": f"a glacier {DECODE_OUT_OF_MEMORY_CUE}", **RESUMABLE})
    retried = finished(job_queue, failing.job_id)
    assert (retried.status, retried.decode_retries, retried.attempts) == (JobStatus.COMPLETED, 1, 1)
    assert retried.steps_run == STEPS  # the denoising ran once
    assert retried.timings.denoise_s is not None and retried.timings.denoise_s > 0
    assert "decoding the same latents again in 256x256 tiles" in worker.log
    assert "CUDA out of memory. Tried to allocate 30.00 GiB (in the VAE decode)" in worker.log

    assert frames(settings, retried).shape == (31, 96, 160, 3)
    wait_for_checkpoint_dropped(settings, failing.job_id)


def test_a_downloaded_mp4_says_how_it_was_made_and_its_request_renders_the_same_frames(
    worker: Child, module_settings: Settings, two_accounts: tuple[str, str, str], tmp_path: Path
) -> None:
    _, owner_key, _ = two_accounts
    auth = {"Authorization": f"Bearer {owner_key}"}
    asked = {"prompt": 'a red kite; "over" the dunes = wind #1', "negative_prompt": "rain", **SMALL}
    with TestClient(create_app(module_settings), base_url="http://127.0.0.1") as http:

        def downloaded(body: dict[str, object], name: str) -> tuple[Path, dict[str, object]]:
            answer = http.post("/generate", json=body, headers=auth)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]

            def done() -> dict[str, object] | None:
                status = http.get(f"/status/{job_id}", headers=auth).json()
                return status if status["status"] in {"COMPLETED", "FAILED", "CANCELLED"} else None

            status = wait_for(done, 240, f"job {job_id} to end")
            assert isinstance(status, dict) and status["status"] == "COMPLETED", status
            path = tmp_path / name
            path.write_bytes(http.get(f"/download/{job_id}", headers=auth).content)
            return path, status

        first, status = downloaded(asked, "first.mp4")
        record = read_provenance(first)  # with the bundled ffmpeg
        assert record["request"] == status["request"] and record["request"]["seed"] is not None
        assert (record["job_id"], record["status_url"]) == (status["job_id"], f"/status/{status['job_id']}")
        assert record["model"] == {"id": "tiny", "revision": None}
        assert set(record["versions"]) == {"diffusers", "torch", "transformers"}
        assert record["dtype"] == "float32" and record["fast_path"]["attention"] == "prefix"

        again, _ = downloaded(record["request"], "again.mp4")
    assert np.array_equal(iio.imread(first), iio.imread(again))  # every pixel


def test_a_file_without_our_record_is_refused_in_words(tmp_path: Path) -> None:
    plain = tmp_path / "plain.mp4"
    write_mp4(np.zeros((7, 64, 64, 3), np.uint8), plain, 24)
    with pytest.raises(NoProvenance, match="no studio record"):
        read_provenance(plain)
    foreign = tmp_path / "foreign.mp4"
    write_mp4(np.zeros((7, 64, 64, 3), np.uint8), foreign, 24, comment="made with another tool")
    with pytest.raises(NoProvenance, match="not a studio record"):
        read_provenance(foreign)
    odd = tmp_path / "odd.mp4"
    write_mp4(np.zeros((7, 64, 64, 3), np.uint8), odd, 24, comment=json.dumps({"request": {"prompt": "x", "steps": 9}}))
    with pytest.raises(NoProvenance, match="no request this studio can render"):
        request_of(read_provenance(odd))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(NoProvenance, match="not a video"):
        read_provenance(text)
