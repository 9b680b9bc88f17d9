"""Typed settings, read once from MOCHI_* environment variables and passed in."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, TypeVar, cast, get_args

Offload = Literal["auto", "none", "model", "sequential"]
OFFLOAD_CHOICES: tuple[str, ...] = get_args(Offload)
Device = Literal["auto", "cuda", "cpu"]
DEVICE_CHOICES: tuple[str, ...] = get_args(Device)
Switch = Literal["auto", "on", "off"]
SWITCH_CHOICES: tuple[str, ...] = get_args(Switch)
Guests = Switch
# The transformer's attention (fast_path.py). prefix: each prompt's real tokens only, their count known on
# the host; masked: every prompt slot, the padded ones masked out; diffusers: diffusers' own processor.
Attention = Literal["prefix", "masked", "diffusers"]
ATTENTION_CHOICES: tuple[str, ...] = get_args(Attention)

T = TypeVar("T")
N = TypeVar("N", int, float)
MAX_PORT = 65535
SPACE_SERVER_DIR = Path("/tmp/mochi-server")
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's longest: a presigned link can work for a week at most


# What the studio writes (the queue server's append-only file, with every prompt in it, and the videos)
# is its owner's alone, as the server's socket already is.
PRIVATE_UMASK = 0o077


class SettingsError(ValueError):
    """A MOCHI_* variable holds a value we cannot use."""


# S3's rules for a bucket's name: 3 to 63 lower-case letters, digits, dots and hyphens, starting and
# ending with a letter or digit.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True, slots=True)
class BucketURL:
    """`s3://BUCKET/PREFIX` (MOCHI_STORAGE_URL): where an object store keeps the videos; `prefix` is empty
    or ends with `/`. The store's endpoint and credentials are boto3's own (AWS_ENDPOINT_URL, profiles)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, raw: str) -> BucketURL:
        scheme, _, rest = raw.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme != "s3" or not BUCKET_NAME.fullmatch(bucket):
            raise ValueError(raw)
        prefix = prefix.strip("/")
        if prefix and any(part in {"", ".", ".."} for part in prefix.split("/")):
            raise ValueError(raw)
        return cls(bucket, f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may ask for (see GenerationRequest)."""

    max_prompt_tokens: int = 256
    max_num_frames: int = 163
    max_num_inference_steps: int = 100
    min_side_px: int = 64
    max_height_px: int = 1280
    max_width_px: int = 1280
    max_fps: int = 60
    # Sustained bf16 TFLOP/s of one worker's GPU (an H100 at about 40% of its peak): with the job time
    # limit, it bounds the work one request may ask for (see mochi_app/work.py).
    gpu_tflops: int = 400
    max_render_s: int = 3600  # MOCHI_JOB_TIMEOUT_S: a request predicted to take longer is refused


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the processes need to know, from `Settings.from_env()`."""

    redis_url: str | None = None
    data_dir: Path = Path("data")
    # The embedded server's files (its append-only file); another filesystem than the videos' keeps a disk
    # that videos fill from stopping the queue. None: `redis` in the data folder.
    server_dir: Path | None = None
    # Where finished videos are kept: None (MOCHI_STORAGE_URL unset or `file:`) is the videos folder.
    storage: BucketURL | None = None
    download_url_ttl_s: int = 300  # how long a link to a video in the object store works
    # How often the web snapshots records and accounts beside the videos (0: never); app.py restores an
    # empty embedded server from the latest one, and snapshots once more as it stops.
    snapshot_interval_s: int = 60
    checkpoint_every_steps: int = 4  # a running job's latents are saved this often, to resume from (0: never)
    preview_every_steps: int = 2  # a running job's live preview is made this often (0: never)
    # Deliver webhooks to loopback, private and link-local addresses too (a receiver on this host, in tests).
    webhook_allow_private: bool = False
    model: str = "auto"
    offload: Offload = "auto"
    device: Device = "auto"  # auto: cuda when torch can use a GPU, else cpu
    queue_name: str = "mochi"
    workers: int | None = 1  # worker processes app.py starts; None (MOCHI_WORKERS=auto): one per visible GPU
    job_timeout_s: int = 3600
    warmup: bool = True
    host: str = "127.0.0.1"
    # Host names the web answers besides the loopback ones on a loopback bind (DNS rebinding stops there);
    # on a public bind, empty means any.
    allowed_hosts: tuple[str, ...] = ()
    # Other sites' origins (`https://app.example`) whose pages may call the API with the visitor's cookies.
    cors_origins: tuple[str, ...] = ()
    port: int = 7860
    guests: Guests = "auto"  # auto: a guest account per browser on public addresses, the local owner on loopback
    max_pending_jobs: int = 10  # per account
    # Per address, for the accounts anyone can make (guests, Hugging Face): one client with many of them
    # still waits its turn.
    max_pending_jobs_per_address: int = 20
    max_queued_jobs: int = 100  # waiting jobs in all; past it, submits get 429 until workers catch up
    new_guests_per_hour: int = 30  # new guest accounts one address may be given in an hour
    submits_per_minute: int = 30  # per account
    # Fair share: an account's GPU time counts against its place in the queue for at most this long.
    fair_share_window_s: int = 3600
    daily_gpu_seconds: int = 0  # GPU-seconds per account in any 24 h (0: unlimited); `accounts set-budget` overrides
    guest_daily_gpu_seconds: int = 900  # the same for the accounts anyone can make (guests, Hugging Face)
    max_request_bytes: int = 64 * 1024
    request_timeout_s: int = 30  # a client has this long to send a whole request, or its connection is closed
    max_connections: int = 1000  # open connections (an open page holds two); past it, new requests get 503
    heartbeat_ttl_s: int = 15  # a RUNNING job whose worker has not beaten for this long is recovered
    stop_grace_s: int = 30  # a stopping worker's job may run this long before it goes back on the queue
    min_free_disk_bytes: int = 2**30  # below this much free space for videos or the queue's files, no new jobs
    retention_days: int = 0  # finished jobs and their videos are deleted this long after they end; 0 keeps them
    guest_retention_days: int = 7  # the same for guests' jobs (whichever is sooner); 0 keeps them
    compile_blocks: Switch = "auto"  # torch.compile the transformer blocks; auto: on CUDA only
    attention: Attention = "prefix"  # the transformer's attention processor (lossless, every choice)
    step_cache: float = 0.0  # FirstBlockCache threshold; skips work and changes the output, so 0 (off)
    limits: Limits = field(default_factory=Limits)
    # Set by Hugging Face on a Space with `hf_oauth: true`: together they turn on "Sign in with Hugging Face".
    space_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)

    @property
    def hugging_face_sign_in(self) -> bool:
        return self.space_id is not None and self.oauth_client_secret is not None

    @property
    def embedded(self) -> bool:
        """Shown inside another site's page: a Hugging Face Space lives in an iframe on huggingface.co."""
        return self.space_id is not None

    @property
    def videos_dir(self) -> Path:
        return self.data_dir / "videos"

    @property
    def staging_dir(self) -> Path:
        """Where a worker encodes a video: the videos folder itself, or, with an object store, a folder it
        uploads from and empties."""
        return self.videos_dir if self.storage is None else self.data_dir / "uploads"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def compile_cache_dir(self) -> Path:
        return self.data_dir / "compile-cache"

    @property
    def redis_dir(self) -> Path:
        """MOCHI_SERVER_DIR, else `redis/` in the data folder; on a Space, the Space's own disk: its /data
        may be a mounted bucket, which uploads a file when it is closed and would never hold the append-only
        file whole (snapshots carry the records across restarts there)."""
        if self.server_dir is not None:
            return self.server_dir
        return SPACE_SERVER_DIR if self.space_id is not None else self.data_dir / "redis"

    def to_env(self) -> dict[str, str]:
        """The variables that `from_env` reads back as these settings, for a child process."""
        env = {_ENV_NAMES.get(f.name, f"MOCHI_{f.name.upper()}"): _env_text(getattr(self, f.name)) for f in _SCALARS}
        if self.workers is None:
            env["MOCHI_WORKERS"] = "auto"
        env |= {f"MOCHI_{f.name.upper()}": str(getattr(self.limits, f.name)) for f in _LIMITS}
        if self.space_id is not None:
            env |= {"SYSTEM": "spaces", "SPACE_ID": self.space_id}
        if self.oauth_client_secret is not None:
            env["OAUTH_CLIENT_SECRET"] = self.oauth_client_secret
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read MOCHI_* variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        if env.get("MOCHI_BATCHED_ATTENTION", "").strip():
            raise SettingsError(
                "MOCHI_BATCHED_ATTENTION is gone: set MOCHI_ATTENTION to prefix (the default), masked or "
                f"diffusers instead, got MOCHI_BATCHED_ATTENTION={env['MOCHI_BATCHED_ATTENTION']!r}"
            )
        read = _Reader(env)
        job_timeout_s = read.integer("MOCHI_JOB_TIMEOUT_S", 3600, minimum=1)
        limits = Limits(
            **{f.name: read.integer(f"MOCHI_{f.name.upper()}", cast(int, f.default), minimum=1) for f in _LIMITS},
            max_render_s=job_timeout_s,
        )
        return cls(
            redis_url=env.get("MOCHI_REDIS_URL") or None,
            data_dir=Path(read.text("MOCHI_DATA_DIR", "data")).expanduser().absolute(),
            server_dir=Path(raw).expanduser().absolute() if (raw := read.text("MOCHI_SERVER_DIR", "")) else None,
            storage=read.storage("MOCHI_STORAGE_URL"),
            download_url_ttl_s=read.integer("MOCHI_DOWNLOAD_URL_TTL_S", 300, minimum=1, maximum=MAX_PRESIGN_S),
            snapshot_interval_s=read.integer("MOCHI_SNAPSHOT_INTERVAL_S", 60, minimum=0),
            checkpoint_every_steps=read.integer("MOCHI_CHECKPOINT_EVERY_STEPS", 4, minimum=0),
            preview_every_steps=read.integer("MOCHI_PREVIEW_EVERY_STEPS", 2, minimum=0),
            webhook_allow_private=read.boolean("MOCHI_WEBHOOK_ALLOW_PRIVATE", False),
            model=read.text("MOCHI_MODEL", "auto"),
            offload=cast(Offload, read.choice("MOCHI_OFFLOAD", "auto", OFFLOAD_CHOICES)),
            device=cast(Device, read.choice("MOCHI_DEVICE", "auto", DEVICE_CHOICES)),
            queue_name=read.text("MOCHI_QUEUE_NAME", "mochi"),
            workers=read.count_or_auto("MOCHI_WORKERS", 1),
            job_timeout_s=job_timeout_s,
            warmup=read.boolean("MOCHI_WARMUP", True),
            # Hugging Face Spaces set GRADIO_SERVER_NAME/PORT; our own names win when both are set.
            host=read.text("MOCHI_HOST", read.text("GRADIO_SERVER_NAME", "127.0.0.1")),
            allowed_hosts=read.names("MOCHI_ALLOWED_HOSTS"),
            cors_origins=read.names("MOCHI_CORS_ORIGINS"),
            port=read.integer("MOCHI_PORT", read.integer("GRADIO_SERVER_PORT", 7860, 1, MAX_PORT), 1, MAX_PORT),
            guests=cast(Guests, read.choice("MOCHI_GUESTS", "auto", SWITCH_CHOICES)),
            max_pending_jobs=read.integer("MOCHI_MAX_PENDING_JOBS", 10, minimum=1),
            max_pending_jobs_per_address=read.integer("MOCHI_MAX_PENDING_JOBS_PER_ADDRESS", 20, minimum=1),
            max_queued_jobs=read.integer("MOCHI_MAX_QUEUED_JOBS", 100, minimum=1),
            new_guests_per_hour=read.integer("MOCHI_NEW_GUESTS_PER_HOUR", 30, minimum=1),
            submits_per_minute=read.integer("MOCHI_SUBMITS_PER_MINUTE", 30, minimum=1),
            fair_share_window_s=read.integer("MOCHI_FAIR_SHARE_WINDOW_S", 3600, minimum=1),
            daily_gpu_seconds=read.integer("MOCHI_DAILY_GPU_SECONDS", 0, minimum=0),
            guest_daily_gpu_seconds=read.integer("MOCHI_GUEST_DAILY_GPU_SECONDS", 900, minimum=0),
            max_request_bytes=read.integer("MOCHI_MAX_REQUEST_BYTES", 64 * 1024, minimum=1024),
            request_timeout_s=read.integer("MOCHI_REQUEST_TIMEOUT_S", 30, minimum=1),
            max_connections=read.integer("MOCHI_MAX_CONNECTIONS", 1000, minimum=1),
            heartbeat_ttl_s=read.integer("MOCHI_HEARTBEAT_TTL_S", 15, minimum=2),
            stop_grace_s=read.integer("MOCHI_STOP_GRACE_S", 30, minimum=0),
            min_free_disk_bytes=read.integer("MOCHI_MIN_FREE_DISK_BYTES", 2**30, minimum=0),
            retention_days=read.integer("MOCHI_RETENTION_DAYS", 0, minimum=0),
            guest_retention_days=read.integer("MOCHI_GUEST_RETENTION_DAYS", 7, minimum=0),
            compile_blocks=cast(Switch, read.choice("MOCHI_COMPILE", "auto", SWITCH_CHOICES)),
            attention=cast(Attention, read.choice("MOCHI_ATTENTION", "prefix", ATTENTION_CHOICES)),
            step_cache=read.number("MOCHI_STEP_CACHE", 0.0, minimum=0.0),
            limits=limits,
            # Gradio counts SPACE_ID only with SYSTEM=spaces (off a Space its sign-in needs a local hub login).
            space_id=(env.get("SPACE_ID") or None) if env.get("SYSTEM") == "spaces" else None,
            oauth_client_secret=env.get("OAUTH_CLIENT_SECRET") or None,
        )


# The fields `to_env` writes one variable each for, and the variables not named MOCHI_{FIELD}.
_SCALARS = tuple(f for f in fields(Settings) if f.name not in {"limits", "space_id", "oauth_client_secret"})
_ENV_NAMES = {"compile_blocks": "MOCHI_COMPILE", "storage": "MOCHI_STORAGE_URL"}
_LIMITS = tuple(f for f in fields(Limits) if f.name != "max_render_s")  # max_render_s is MOCHI_JOB_TIMEOUT_S


def _env_text(value: object) -> str:
    """A setting as its variable spells it: `from_env` reads an empty value as the default (None)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class _Reader:
    env: Mapping[str, str]

    def _parse(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise SettingsError(f"{name} must be {expected}, got {raw!r}") from None

    def text(self, name: str, default: str) -> str:
        return self._parse(name, default, str, "text")

    def storage(self, name: str) -> BucketURL | None:
        """None for unset or `file:` (the videos folder), else an `s3://BUCKET/PREFIX`."""
        if self.text(name, "file:") in {"file:", "file"}:
            return None
        return self._parse(name, None, BucketURL.parse, "file: or s3://BUCKET/PREFIX (a valid S3 bucket name)")

    def names(self, name: str) -> tuple[str, ...]:
        """A comma-separated list; empty when unset."""
        return tuple(part.strip() for part in self.env.get(name, "").split(",") if part.strip())

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self._parse(name, default, int, "an integer")
        return self._within(name, value, minimum, maximum)

    def count_or_auto(self, name: str, default: int) -> int | None:
        """A count of at least 0, or None for `auto`."""
        if self.text(name, "").lower() == "auto":
            return None
        return self._parse(name, default, _parse_count, "an integer of at least 0, or auto")

    def number(self, name: str, default: float, minimum: float) -> float:
        return self._within(name, self._parse(name, default, _parse_finite, "a number"), minimum)

    @staticmethod
    def _within(name: str, value: N, minimum: N, maximum: N | None = None) -> N:
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(f"{name} must be at most {maximum}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return self._parse(name, default, _parse_bool, "one of 1, 0, true, false, yes, no")


def _parse_count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _parse_finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)
