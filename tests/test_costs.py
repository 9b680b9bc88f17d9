"""The cost model: phase features, the relative non-negative fit, the prior until enough timings, and ETAs."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict

import pytest
from redis import Redis

from mochi_app.costs import (
    PHASES,
    TINY_PRIOR,
    CostFit,
    CostModels,
    Sample,
    Shape,
    arithmetic_prior,
    fit,
    fit_key,
    samples_key,
)
from mochi_app.eta import Phase, phase, run_left_s
from mochi_app.records import CostEstimate, JobRecord, JobStatus, Progress, Timings
from mochi_app.schemas import GenerationRequest
from tests.harness import new_account

TRUE = CostFit(
    coefficients={
        "denoise": [0.2, 0.01, 3e-5, 2e-9],
        "decode": [0.1, 5e-6, 3e-7],
        "encode": [0.05, 1e-7],
        "other": [0.03],
    }
)
GRID = [
    GenerationRequest.model_validate(
        {"prompt": "a cat", "num_frames": frames, "height": side, "width": side, "num_inference_steps": steps}
    )
    for frames, side, steps in itertools.product((7, 31, 85), (64, 128), (2, 8))
]


def sample(request: GenerationRequest, truth: CostFit = TRUE, noise: float = 0.0) -> Sample:
    shape = Shape.of(request)
    seconds = {name: sum(c * f for c, f in zip(truth.coefficients[name], features(shape), strict=True)) * (1 + noise)
               for name, features in PHASES.items()}  # fmt: skip
    return Sample(**asdict(shape), seconds=seconds)


def test_twelve_shapes_recover_the_coefficients_that_made_their_timings() -> None:
    fitted = fit([sample(request) for request in GRID], arithmetic_prior(400))
    for request in GRID:
        assert fitted.estimate(request).run_s == pytest.approx(TRUE.estimate(request).run_s, rel=1e-3)
    assert fitted.samples == len(GRID)


def test_too_few_timings_scale_the_prior_instead() -> None:
    one = GRID[5]
    fitted = fit([sample(one, noise=0.0)], TINY_PRIOR)
    assert fitted.estimate(one).run_s == pytest.approx(TRUE.estimate(one).run_s, rel=0.02)
    ratio = fitted.coefficients["decode"][1] / TINY_PRIOR.coefficients["decode"][1]
    assert ratio == pytest.approx(fitted.coefficients["decode"][0] / TINY_PRIOR.coefficients["decode"][0])


def test_one_shape_many_times_cannot_tell_the_terms_apart_and_keeps_the_priors_shape() -> None:
    fitted = fit([sample(GRID[0]) for _ in range(20)], TINY_PRIOR)
    scale = fitted.coefficients["denoise"][0] / TINY_PRIOR.coefficients["denoise"][0]
    assert fitted.coefficients["denoise"] == pytest.approx([c * scale for c in TINY_PRIOR.coefficients["denoise"]])


def test_no_coefficient_goes_negative() -> None:
    truth = TRUE.model_copy(update={"coefficients": {**TRUE.coefficients, "denoise": [0.0, 0.02, 0.0, 0.0]}})
    noisy = [sample(request, truth, noise=0.05 * (-1) ** n) for n, request in enumerate(GRID)]
    fitted = fit(noisy, TINY_PRIOR)
    assert all(c >= 0 for coefficients in fitted.coefficients.values() for c in coefficients)


def test_profiles_are_fitted_from_completed_records_and_read_back(redis: Redis) -> None:
    models = CostModels(redis, f"costs-{new_account()}", 400)
    assert models.current("tiny@x86_64", is_tiny=True) == TINY_PRIOR  # nothing timed yet
    now = time.time()
    for request in GRID:
        expected = TRUE.estimate(request)
        record = JobRecord(
            job_id=new_account(), account_id="a", status=JobStatus.COMPLETED, request=request,
            num_frames=request.rendered_num_frames, created_at=now - 100, started_at=now - expected.run_s,
            finished_at=now, progress=Progress(step=request.num_inference_steps, total=request.num_inference_steps),
            timings=Timings(denoise_s=expected.text_encode_s + expected.denoise_s, decode_s=expected.decode_s,
                            encode_s=expected.encode_s),
        )  # fmt: skip
        models.observe(record, "tiny@x86_64", is_tiny=True)
    current = models.current("tiny@x86_64", is_tiny=True)
    assert current.samples == len(GRID)
    assert current.estimate(GRID[-1]).run_s == pytest.approx(TRUE.estimate(GRID[-1]).run_s, rel=0.01)
    assert models.current("tiny@arm64", is_tiny=True) == TINY_PRIOR  # another device learns on its own


def test_a_fit_or_timing_stored_by_an_older_layout_is_passed_over_not_fatal(redis: Redis) -> None:
    models = CostModels(redis, f"costs-{new_account()}", 400)
    old_fit = {"coefficients": {**TINY_PRIOR.coefficients, "decode": [0.1, 2e-6]}, "samples": 40}
    redis.set(fit_key(models.queue_name, "tiny@x86_64"), json.dumps(old_fit))
    assert models.current("tiny@x86_64", is_tiny=True) == TINY_PRIOR
    old_sample = {"step_passes": 2, "tokens": 300, "frame_pixels": 28672, "seconds": {"denoise": 1.0}}
    redis.lpush(samples_key(models.queue_name, "tiny@x86_64"), json.dumps(old_sample))
    request = GRID[0]
    record = JobRecord(
        job_id="j", account_id="a", status=JobStatus.COMPLETED, request=request, num_frames=7, created_at=0,
        started_at=1, finished_at=3, progress=Progress(step=2, total=2),
        timings=Timings(denoise_s=1, decode_s=0.5, encode_s=0.2),
    )  # fmt: skip
    fitted = models.observe(record, "tiny@x86_64", is_tiny=True)
    assert fitted is not None and fitted.samples == 1
    assert models.current("tiny@x86_64", is_tiny=True) == fitted


def test_a_resumed_or_retried_run_is_no_timing_of_its_shape() -> None:
    request = GRID[0]
    record = JobRecord(
        job_id="j", account_id="a", status=JobStatus.COMPLETED, request=request, num_frames=7, created_at=0,
        started_at=1, finished_at=3, progress=Progress(step=2, total=2),
        timings=Timings(denoise_s=1, decode_s=0.5, encode_s=0.2), resumed_from_step=1,
    )  # fmt: skip
    assert Sample.of(record) is None
    assert Sample.of(record.model_copy(update={"resumed_from_step": None})) is not None


def running(step: int, total: int, started_ago_s: float, decoding_for_s: float | None = None) -> JobRecord:
    now = time.time()
    return JobRecord(
        job_id="j", account_id="a", status=JobStatus.RUNNING, request=GRID[0], num_frames=7, created_at=now - 100,
        started_at=now - started_ago_s, progress=Progress(step=step, total=total),
        quote=CostEstimate(text_encode_s=1, denoise_s=10, decode_s=6, encode_s=2, other_s=1),
        denoised_at=None if decoding_for_s is None else now - decoding_for_s,
    )  # fmt: skip


def test_the_run_eta_includes_the_decode_and_encode_and_decoding_has_its_own() -> None:
    now = time.time()
    denoising = running(step=5, total=10, started_ago_s=10)
    assert phase(denoising) is Phase.DENOISING
    assert run_left_s(denoising, now) == pytest.approx(5 * 2 + 9, abs=0.2)  # 2 s a step, then 9 s quoted
    decoding = running(step=10, total=10, started_ago_s=30, decoding_for_s=4)
    assert phase(decoding) is Phase.DECODING
    assert run_left_s(decoding, now) == pytest.approx(9 - 4, abs=0.2)
    assert run_left_s(running(step=10, total=10, started_ago_s=60, decoding_for_s=40), now) == 0
    assert run_left_s(running(step=0, total=10, started_ago_s=3), now) == pytest.approx(20 - 3, abs=0.2)
