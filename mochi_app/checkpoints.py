"""Denoising checkpoints: a job's latents after a step, as safetensors bytes, so another attempt can resume."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from mochi_app.schemas import GenerationRequest

log = logging.getLogger(__name__)

LATENTS = "latents"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The latents after `step` denoising steps (a CPU tensor); `step` equal to the job's steps means
    the denoising is done and only the decode is left."""

    step: int
    latents: Any  # torch.Tensor; torch is imported only where a model runs


def fingerprint(request: GenerationRequest, model_name: str) -> str:
    """What a checkpoint is valid for: the same request (seed included) on the same model."""
    return hashlib.sha256(f"{model_name}\n{request.model_dump_json()}".encode()).hexdigest()


def to_bytes(checkpoint: Checkpoint, valid_for: str) -> bytes:
    from safetensors.torch import save

    metadata = {"step": str(checkpoint.step), "fingerprint": valid_for}
    return save({LATENTS: checkpoint.latents.contiguous()}, metadata=metadata)


def from_bytes(data: bytes, valid_for: str, job_id: str) -> Checkpoint | None:
    """The checkpoint `data` holds, or None (logged) when it is unreadable or was saved for another
    request or model: rendering from the start is always correct, only slower."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        header_bytes = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_bytes]).get("__metadata__", {})
        if metadata.get("fingerprint") != valid_for:
            log.warning("job %s: its checkpoint was saved for another request or model; rendering afresh", job_id)
            return None
        return Checkpoint(step=int(metadata["step"]), latents=load(data)[LATENTS])
    except (ValueError, KeyError, TypeError, SafetensorError) as exc:  # a torn or foreign file
        log.warning("job %s: its checkpoint is unreadable (%s); rendering afresh", job_id, exc)
        return None
