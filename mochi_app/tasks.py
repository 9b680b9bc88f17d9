"""The RQ job function: thin, JSON in (a job id); runs the job on the worker's loaded renderer."""

from __future__ import annotations

from mochi_app.runner import JobRunner

_runner: JobRunner | None = None


def install_runner(runner: JobRunner) -> None:
    """Called once by the worker process after it has loaded the model."""
    global _runner  # noqa: PLW0603 - RQ calls a function by name; the loaded model must outlive the call
    _runner = runner


def render(job_id: str) -> None:
    """The RQ entry point (`mochi_app.tasks.render`): its only argument is JSON, a job id."""
    if _runner is None:
        raise RuntimeError("mochi_app.tasks.render runs only inside `python -m mochi_app worker`")
    _runner.run(job_id)
