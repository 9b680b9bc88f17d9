"""What a video says about how it was made: a JSON record in its MP4's `comment` tag, and reading it back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mochi_app.records import JobRecord
from mochi_app.schemas import GenerationRequest
from mochi_app.video import ffmpeg_exe

READ_TIMEOUT_S = 30
MAX_TAG_BYTES = 64 * 1024  # far more than a record holds; a bigger tag is no video of ours


class NoProvenance(ValueError):
    """The file carries no readable record of ours; the message says why."""


def provenance(record: JobRecord, made_with: dict[str, Any]) -> dict[str, Any]:
    """The record an MP4 carries: the exact request (diffusers' names, the seed used, so `POST /generate` with
    it renders the same video), what `made_with` says of the model, versions, device and settings, and the job."""
    return {
        "request": record.request.model_dump(mode="json"),
        **made_with,
        "job_id": record.job_id,
        "status_url": f"/status/{record.job_id}",
    }


def read_provenance(path: Path) -> dict[str, Any]:
    """The record in an MP4's `comment` tag, read with the bundled ffmpeg; NoProvenance when there is none."""
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    try:  # a hostile file may be built to keep a demuxer busy
        result = subprocess.run(command, capture_output=True, check=False, process_group=0, timeout=READ_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise NoProvenance("this file took too long to read as a video") from None
    if result.returncode != 0:
        raise NoProvenance("this file is not a video ffmpeg can read")
    comment = ffmetadata_values(result.stdout.decode(errors="replace")).get("comment")
    if comment is None or len(comment) > MAX_TAG_BYTES:
        raise NoProvenance("this video carries no studio record (no comment tag)")
    try:
        found = json.loads(comment)
    except ValueError:
        raise NoProvenance("this video's comment tag is not a studio record") from None
    if not isinstance(found, dict) or not isinstance(found.get("request"), dict):
        raise NoProvenance("this video's comment tag is not a studio record")
    return found


def request_of(found: dict[str, Any]) -> GenerationRequest:
    """The request a record holds, checked as stored requests are (the web's limits apply when it is submitted)."""
    try:
        return GenerationRequest.model_validate(found["request"])
    except ValidationError:
        raise NoProvenance("this video's record holds no request this studio can render") from None


def ffmetadata_values(text: str) -> dict[str, str]:
    """`key=value` lines of ffmpeg's metadata format, unescaped: a backslash quotes the next character
    (`=`, `;`, `#`, `\\` and newlines are quoted so)."""
    values: dict[str, str] = {}
    entry: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            entry.append(next(chars, ""))
        elif char == "\n":
            _add_entry(values, "".join(entry))
            entry = []
        else:
            entry.append(char)
    _add_entry(values, "".join(entry))
    return values


def _add_entry(values: dict[str, str], line: str) -> None:
    key, equals, value = line.partition("=")
    if equals and not key.startswith((";", "[")):
        values.setdefault(key, value)
