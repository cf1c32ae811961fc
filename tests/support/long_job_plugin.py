"""A plugin written with the SDK whose async tools run as long jobs (tests/test_long_jobs.py).

Run as ``python -m tests.support.long_job_plugin`` with ``TOOLCALL_REGISTRY_ADDRESS``
and ``LONG_JOB_DIR`` set. Tools:

- ``hold_job(tag)``: accepts the call as job ``hold-<tag>`` and writes the job's
  handle to ``<dir>/<tag>.json``, so the test (another process) reports
  progress and completes it; when the job is cancelled or expires, its reason
  goes to ``<dir>/<tag>.cancelled``.
- ``brief_job(tag)``: the same with ``max_job_seconds=1``.
- ``steps_job(steps)``: accepts, then a thread reports progress ``steps`` times
  (0.2 s apart) and completes with ``{"steps": steps}`` and a PNG.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from plugin_stub import Accepted, CallContext, Image, Job, Plugin, llm_tool
from tests.support.images import png


def _hold(tag: str, ctx: CallContext) -> Accepted:
    folder = Path(os.environ["LONG_JOB_DIR"])
    job = ctx.job
    assert job is not None, "the LLMService offers a job with every async call"
    job.on_cancel(lambda j: (folder / f"{tag}.cancelled").write_text(j.cancel_reason))
    handle = folder / f"{tag}.json"
    handle.with_suffix(".tmp").write_text(job.to_json())
    handle.with_suffix(".tmp").rename(handle)  # whole or not at all
    return Accepted(job_id=f"hold-{tag}")


def _steps(handle: str, steps: int) -> None:
    job = Job.from_json(handle)  # as another process would
    for i in range(1, steps + 1):
        time.sleep(0.2)
        job.report_progress(i / steps, f"step {i} of {steps}")
    job.complete([{"steps": steps}, Image(png(2, 2))])


class LongJobs(Plugin):
    @llm_tool(mode="async", ack_message="Held; the result will follow.")
    def hold_job(self, tag: str, ctx: CallContext) -> Accepted:
        """Holds a job until the test completes it."""
        return _hold(tag, ctx)

    @llm_tool(mode="async", max_job_seconds=1)
    def brief_job(self, tag: str, ctx: CallContext) -> Accepted:
        """Holds a job that may run for one second."""
        return _hold(tag, ctx)

    @llm_tool(mode="async")
    def steps_job(self, steps: int, ctx: CallContext) -> Accepted:
        """Reports progress steps times, then completes."""
        assert ctx.job is not None
        threading.Thread(target=_steps, args=(ctx.job.to_json(), steps), daemon=True).start()
        return Accepted(job_id="steps")


if __name__ == "__main__":
    LongJobs().run()
