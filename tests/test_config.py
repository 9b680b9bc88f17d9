"""Settings: read once from MOCHI_* variables, with clear errors for values we cannot use."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from mochi_app.config import SPACE_SERVER_DIR, Limits, Settings, SettingsError


def test_defaults_without_any_variable() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert settings.data_dir == Path("data").absolute()
    assert (settings.model, settings.offload, settings.job_timeout_s) == ("auto", "auto", 3600)
    assert settings.device == "auto"
    assert settings.limits == Limits()
    assert (settings.limits.gpu_tflops, settings.limits.max_render_s) == (400, 3600)
    assert settings.videos_dir == settings.data_dir / "videos"
    assert (settings.heartbeat_ttl_s, settings.stop_grace_s, settings.retention_days) == (15, 30, 0)
    assert (settings.compile_blocks, settings.attention, settings.step_cache) == ("auto", "prefix", 0.0)


def test_variables_override_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "MOCHI_REDIS_URL": "redis://queue:6379/0",
            "MOCHI_DATA_DIR": str(tmp_path),
            "MOCHI_MODEL": "tiny",
            "MOCHI_OFFLOAD": "sequential",
            "MOCHI_JOB_TIMEOUT_S": "90",
            "MOCHI_MAX_NUM_INFERENCE_STEPS": "12",
            "MOCHI_WARMUP": "false",
            "MOCHI_STOP_GRACE_S": "0",
            "MOCHI_RETENTION_DAYS": "30",
            "MOCHI_COMPILE": "off",
            "MOCHI_ATTENTION": "diffusers",
            "MOCHI_STEP_CACHE": "0.08",
            "MOCHI_WORKERS": "auto",
            "MOCHI_DEVICE": "cpu",
            "MOCHI_GPU_TFLOPS": "900",
        }
    )
    assert settings.redis_url == "redis://queue:6379/0"
    assert settings.data_dir == tmp_path
    assert (settings.model, settings.offload, settings.job_timeout_s) == ("tiny", "sequential", 90)
    assert settings.limits.max_num_inference_steps == 12
    assert settings.warmup is False
    assert (settings.stop_grace_s, settings.retention_days) == (0, 30)
    assert (settings.compile_blocks, settings.attention, settings.step_cache) == ("off", "diffusers", 0.08)
    assert settings.workers is None  # auto: one per visible GPU
    assert settings.device == "cpu"
    # The work a request may ask for follows the job time limit and the GPU's speed.
    assert (settings.limits.gpu_tflops, settings.limits.max_render_s) == (900, 90)


# A value other than the default for every variable Settings reads.
EVERY_VARIABLE = {
    "MOCHI_REDIS_URL": "redis://queue:6379/2",
    "MOCHI_SERVER_DIR": "/srv/queue",
    "MOCHI_MODEL": "genmo/mochi-1-preview",
    "MOCHI_OFFLOAD": "model",
    "MOCHI_DEVICE": "cuda",
    "MOCHI_QUEUE_NAME": "renders",
    "MOCHI_WORKERS": "3",
    "MOCHI_JOB_TIMEOUT_S": "900",
    "MOCHI_WARMUP": "0",
    "MOCHI_HOST": "0.0.0.0",
    "MOCHI_ALLOWED_HOSTS": "studio.example,www.studio.example",
    "MOCHI_CORS_ORIGINS": "https://app.example",
    "MOCHI_PORT": "8080",
    "MOCHI_GUESTS": "on",
    "MOCHI_MAX_PENDING_JOBS": "4",
    "MOCHI_MAX_PENDING_JOBS_PER_ADDRESS": "6",
    "MOCHI_MAX_QUEUED_JOBS": "50",
    "MOCHI_NEW_GUESTS_PER_HOUR": "5",
    "MOCHI_SUBMITS_PER_MINUTE": "7",
    "MOCHI_FAIR_SHARE_WINDOW_S": "600",
    "MOCHI_DAILY_GPU_SECONDS": "7200",
    "MOCHI_GUEST_DAILY_GPU_SECONDS": "300",
    "MOCHI_MAX_REQUEST_BYTES": "4096",
    "MOCHI_REQUEST_TIMEOUT_S": "12",
    "MOCHI_MAX_CONNECTIONS": "64",
    "MOCHI_HEARTBEAT_TTL_S": "9",
    "MOCHI_STOP_GRACE_S": "5",
    "MOCHI_MIN_FREE_DISK_BYTES": "0",
    "MOCHI_STORAGE_URL": "s3://studio-videos/mochi/",
    "MOCHI_DOWNLOAD_URL_TTL_S": "60",
    "MOCHI_SNAPSHOT_INTERVAL_S": "0",
    "MOCHI_CHECKPOINT_EVERY_STEPS": "2",
    "MOCHI_PREVIEW_EVERY_STEPS": "3",
    "MOCHI_WEBHOOK_ALLOW_PRIVATE": "1",
    "MOCHI_RETENTION_DAYS": "30",
    "MOCHI_GUEST_RETENTION_DAYS": "2",
    "MOCHI_COMPILE": "on",
    "MOCHI_ATTENTION": "masked",
    "MOCHI_STEP_CACHE": "0.05",
    "MOCHI_MAX_PROMPT_TOKENS": "128",
    "MOCHI_MAX_NUM_FRAMES": "85",
    "MOCHI_MAX_NUM_INFERENCE_STEPS": "50",
    "MOCHI_MIN_SIDE_PX": "32",
    "MOCHI_MAX_HEIGHT_PX": "720",
    "MOCHI_MAX_WIDTH_PX": "960",
    "MOCHI_MAX_FPS": "24",
    "MOCHI_GPU_TFLOPS": "600",
    "SYSTEM": "spaces",
    "SPACE_ID": "someone/studio",
    "OAUTH_CLIENT_SECRET": "s3cret",
}


def test_to_env_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    """What a test or the supervisor hands a child process is every setting, not the few someone remembered."""
    settings = Settings.from_env({**EVERY_VARIABLE, "MOCHI_DATA_DIR": str(tmp_path)})
    defaults = Settings.from_env({})
    # The variables above reach every field, so a new setting must join them (and to_env) to pass.
    for f in fields(Settings):
        assert getattr(settings, f.name) != getattr(defaults, f.name), f.name
    for f in fields(Limits):
        assert getattr(settings.limits, f.name) != getattr(defaults.limits, f.name), f.name
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env(defaults.to_env()) == defaults
    for workers in (None, 0):
        assert Settings.from_env(replace(defaults, workers=workers).to_env()).workers == workers


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MOCHI_JOB_TIMEOUT_S", "soon", "MOCHI_JOB_TIMEOUT_S must be an integer, got 'soon'"),
        ("MOCHI_JOB_TIMEOUT_S", "0", "MOCHI_JOB_TIMEOUT_S must be at least 1, got 0"),
        ("MOCHI_DEVICE", "gpu", "MOCHI_DEVICE must be one of auto, cuda, cpu, got 'gpu'"),
        ("MOCHI_OFFLOAD", "disk", "MOCHI_OFFLOAD must be one of auto, none, model, sequential, got 'disk'"),
        ("MOCHI_WARMUP", "maybe", "MOCHI_WARMUP must be one of 1, 0, true, false, yes, no, got 'maybe'"),
        ("MOCHI_MAX_HEIGHT_PX", "-5", "MOCHI_MAX_HEIGHT_PX must be at least 1, got -5"),
        ("MOCHI_RETENTION_DAYS", "-1", "MOCHI_RETENTION_DAYS must be at least 0, got -1"),
        ("MOCHI_WORKERS", "many", "MOCHI_WORKERS must be an integer of at least 0, or auto, got 'many'"),
        ("MOCHI_WORKERS", "-1", "MOCHI_WORKERS must be an integer of at least 0, or auto, got '-1'"),
        ("MOCHI_COMPILE", "yes", "MOCHI_COMPILE must be one of auto, on, off, got 'yes'"),
        ("MOCHI_ATTENTION", "flash", "MOCHI_ATTENTION must be one of prefix, masked, diffusers, got 'flash'"),
        (
            "MOCHI_BATCHED_ATTENTION",
            "0",
            "MOCHI_BATCHED_ATTENTION is gone: set MOCHI_ATTENTION to prefix (the default), masked or diffusers "
            "instead, got MOCHI_BATCHED_ATTENTION='0'",
        ),
        ("MOCHI_STEP_CACHE", "nan", "MOCHI_STEP_CACHE must be a number, got 'nan'"),
        ("MOCHI_STEP_CACHE", "-0.1", "MOCHI_STEP_CACHE must be at least 0.0, got -0.1"),
    ],
)
def test_bad_values_name_the_variable_and_quote_the_value(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value) == message


def test_web_address_defaults_to_loopback_and_honours_space_variables() -> None:
    assert (Settings.from_env({}).host, Settings.from_env({}).port) == ("127.0.0.1", 7860)
    space = Settings.from_env({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"})
    assert (space.host, space.port) == ("0.0.0.0", 7861)
    ours = Settings.from_env({"GRADIO_SERVER_PORT": "7861", "MOCHI_PORT": "8000", "MOCHI_HOST": "::1"})
    assert (ours.host, ours.port) == ("::1", 8000)


def test_port_out_of_range_is_refused() -> None:
    with pytest.raises(SettingsError, match="MOCHI_PORT must be at most 65535, got 70000"):
        Settings.from_env({"MOCHI_PORT": "70000"})


def test_on_a_space_the_queue_servers_files_stay_off_the_data_folder(tmp_path: Path) -> None:
    """A Space's /data may be a mounted bucket: an append-only file there would never be whole."""
    space = Settings.from_env({"SYSTEM": "spaces", "SPACE_ID": "someone/studio", "MOCHI_DATA_DIR": str(tmp_path)})
    assert space.redis_dir == SPACE_SERVER_DIR and not space.redis_dir.is_relative_to(tmp_path)
    assert Settings.from_env({"MOCHI_DATA_DIR": str(tmp_path)}).redis_dir == tmp_path / "redis"
    chosen = {"SYSTEM": "spaces", "SPACE_ID": "a/b", "MOCHI_SERVER_DIR": str(tmp_path / "v")}
    assert Settings.from_env(chosen).redis_dir == tmp_path / "v"
