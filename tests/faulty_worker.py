"""`python -m tests.faulty_worker worker`: a real worker whose pipeline fails on cue, for the fault tests.

A prompt holding one of the cues below makes the real pipeline raise from inside its denoising
loop, at the second step, as a real out-of-memory or a bug in a library would; or its VAE decode run
out of memory once (a render started afresh, not the retry on saved latents); or the worker hang
after a step, to be killed there.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

OUT_OF_MEMORY_CUE = "[inject out-of-memory]"
PIPELINE_ERROR_CUE = "[inject pipeline error]"
CUBLAS_ALLOC_CUE = "[inject cublas allocation failure]"  # cuBLAS says out of memory in a RuntimeError
FAILING_STEP = 1  # the second step, counted from 0 as diffusers does
DECODE_OUT_OF_MEMORY_CUE = "[inject decode out-of-memory]"
HANG_CUE = "[inject hang after step 5]"
HANGING_STEP = 5  # counted from 1, as the job's progress is


def inject_faults() -> None:
    import torch
    from diffusers import MochiPipeline

    faults: dict[str, Callable[[], Exception]] = {
        OUT_OF_MEMORY_CUE: lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        PIPELINE_ERROR_CUE: lambda: RuntimeError("injected pipeline failure"),
        CUBLAS_ALLOC_CUE: lambda: RuntimeError(
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
        ),
    }
    render = MochiPipeline.__call__

    def render_with_faults(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt") or ""
        fault = next((make for cue, make in faults.items() if cue in prompt), None)
        on_step_end = kwargs["callback_on_step_end"]

        def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if fault is not None and index == FAILING_STEP:
                raise fault()
            outputs = on_step_end(pipe, index, timestep, tensors)
            if HANG_CUE in prompt and pipe.scheduler.step_index == HANGING_STEP:
                threading.Event().wait()  # until killed; the heartbeat beats on
            return outputs  # type: ignore[no-any-return]

        if DECODE_OUT_OF_MEMORY_CUE in prompt and kwargs.get("latents") is None:

            def decode_out_of_memory(*args: Any, **kwargs: Any) -> Any:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 GiB (in the VAE decode)")

            pipe.vae.decode = decode_out_of_memory
            try:
                return render(pipe, *args, **{**kwargs, "callback_on_step_end": step_end})
            finally:
                del pipe.vae.decode  # the class's method again
        return render(pipe, *args, **{**kwargs, "callback_on_step_end": step_end})

    MochiPipeline.__call__ = render_with_faults  # type: ignore[method-assign]


if __name__ == "__main__":
    inject_faults()
    from mochi_app.cli import main

    sys.exit(main(sys.argv[1:]))
