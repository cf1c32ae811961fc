"""Long jobs: accept an async call now, report progress and deliver the result later.

    @llm_tool(mode="async", ack_message="The scan started; its result will follow.")
    def scan(self, host: str, ctx: CallContext) -> Accepted:
        '''Scans a host's ports (takes minutes).'''
        handle = ctx.job.to_json()  # ctx.job: None unless the LLMService offered a job
        threading.Thread(target=run_scan, args=(handle, host)).start()
        return Accepted(job_id=f"scan-{host}")

    def run_scan(handle: str, host: str) -> None:  # any thread, or another process
        job = Job.from_json(handle)
        for i, port in enumerate(PORTS):
            ...
            job.report_progress(i / len(PORTS), f"port {port}")
        job.complete({"open": found})  # what a handler may return: JSON, Image(...), ...

The LLMService offers a job with every async call (``CallContext.job``).
Returning ``Accepted`` ends the call but not the task: the model already has
its acknowledgement, and the task runs until ``complete`` / ``fail`` (or
until the tool's ``max_job_seconds``, 24 h by default). The handle is the
task id, a per-task token and the LLMService's address: serializable
(``to_json``), so another process, or this one after a restart, can finish
the job; keep it like a password. Calls are blocking gRPC calls (any
thread; from async code use ``asyncio.to_thread``), with the process's
TLS and token settings (``TOOLCALL_TLS_*``, ``TOOLCALL_TOKEN``); a refused one raises
``JobError`` (``JobEnded`` once the task has ended: cancelled, expired or
completed already).

Cancellation: ``LLMService.CancelTask`` (and expiry) reaches the plugin
process that accepted the job through ``ToolCallback.CancelJob``: its
``Job`` object gets ``cancelled`` set and its ``on_cancel`` callbacks run.
A worker elsewhere learns it from its next report (``JobEnded``).

Bounds: this process remembers at most ``MAX_LIVE_JOBS`` accepted jobs for
CancelJob (the oldest are forgotten first); each call waits at most its
``timeout`` (default 10 s).
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

MAX_LIVE_JOBS = 4096
DEFAULT_CALL_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """Returned by an async tool: the call runs on as a long job (see the module docstring).

    ``job_id``: the plugin's own id for it (at most 128 printable characters;
    empty: the task id), shown in the task and sent back on cancellation.
    """

    job_id: str = ""


class JobError(Exception):
    """The LLMService refused or did not answer a job's report; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class JobEnded(JobError):
    """The task has ended (cancelled, expired, or completed already): stop working on it."""


class Job:
    """The handle of one long job: report progress, complete, fail (thread-safe)."""

    def __init__(
        self, task_id: str, token: str, llm_address: str, max_age_s: float = 0.0, job_id: str = ""
    ) -> None:
        self.task_id = task_id
        self.token = token
        self.llm_address = llm_address
        self.max_age_s = max_age_s
        self.job_id = job_id
        self.cancel_reason = ""
        self._cancelled = threading.Event()
        self._on_cancel: list[Callable[[Job], Any]] = []
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None

    def __repr__(self) -> str:  # never the token
        return f"Job(task_id={self.task_id!r}, job_id={self.job_id!r})"

    # -- moving the handle ------------------------------------------------

    def to_json(self) -> str:
        """The handle as JSON (holds the token: keep it secret)."""
        return json.dumps(
            {
                "task_id": self.task_id,
                "token": self.token,
                "llm_address": self.llm_address,
                "max_age_s": self.max_age_s,
                "job_id": self.job_id,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = json.loads(text)
        return cls(
            str(data["task_id"]),
            str(data["token"]),
            str(data["llm_address"]),
            float(data.get("max_age_s", 0.0)),
            str(data.get("job_id", "")),
        )

    def __getstate__(self) -> dict[str, Any]:  # pickle: the handle, not the live state
        return json.loads(self.to_json())

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["task_id"],
            state["token"],
            state["llm_address"],
            state["max_age_s"],
            state["job_id"],
        )

    # -- cancellation -----------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the LLMService said the job ended (CancelTask or expiry)."""
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        return self._cancelled.wait(timeout)

    def on_cancel(self, callback: Callable[[Job], Any]) -> None:
        """Runs ``callback(job)`` when the job is cancelled (at once if it was already).

        Runs on the plugin's event loop thread: keep it short (set a flag, signal a worker).
        """
        with self._lock:
            if not self._cancelled.is_set():
                self._on_cancel.append(callback)
                return
        callback(self)

    def _cancel(self, reason: str) -> None:
        with self._lock:
            self.cancel_reason = reason
            self._cancelled.set()
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("on_cancel callback of job %s failed", self.task_id)
        _forget(self)

    # -- reports ----------------------------------------------------------

    def report_progress(
        self,
        fraction: float | None = None,
        message: str = "",
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> bool:
        """Tells the LLMService how far the job has come (``fraction`` from 0 to 1).

        False when the report was dropped because the last one was less than
        50 ms ago (the service stores at most 20 a second per job): a later
        report supersedes it, so nothing needs doing.
        """
        from toolcall.v1 import llm_pb2

        request = llm_pb2.ReportProgressRequest(
            task_id=self.task_id, token=self.token, message=message
        )
        if fraction is not None:
            request.fraction = fraction
        try:
            self._call("ReportProgress", request, timeout)
        except JobError as exc:
            if exc.code == "RESOURCE_EXHAUSTED":
                return False
            raise
        return True

    def complete(self, value: Any = None, *, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        """Delivers the job's result: anything a handler may return (JSON, a pydantic
        model, ``Image``..., or a dict with ``output`` and ``is_error``)."""
        from plugin_stub.callback_server import shape_result
        from toolcall.v1 import llm_pb2, tools_pb2

        reply = shape_result(value)
        result = tools_pb2.ToolResult.FromString(reply.SerializeToString())
        self._finish(
            llm_pb2.CompleteTaskRequest(task_id=self.task_id, token=self.token, result=result),
            timeout,
        )

    def fail(
        self, error: str, output: Any = None, *, timeout: float = DEFAULT_CALL_TIMEOUT_S
    ) -> None:
        """Ends the job as failed, with a reason (and an output explaining it)."""
        self.complete({"output": output, "is_error": True, "error": error}, timeout=timeout)

    def _finish(self, request: Any, timeout: float) -> None:
        try:
            self._call("CompleteTask", request, timeout)
        finally:
            _forget(self)
            with self._lock:
                channel, self._channel = self._channel, None
            if channel is not None:
                channel.close()

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """This process's token, only for the LLMService it is configured with.

        The address comes with the call, and anyone on loopback may call a
        plugin: a forged offer naming the caller's own server would otherwise
        collect the token. To any other address the report goes without it;
        the task token in the request is the report's authority, and an
        LLMService with principals then refuses it (set TOOLCALL_LLM_ADDRESS
        where workers run).
        """
        from toolcall import config
        from toolcall.address_policy import canonical_address
        from toolcall.clients import auth_metadata

        try:
            trusted = canonical_address(self.llm_address) == canonical_address(config.llm_address())
        except ValueError:
            trusted = False
        return auth_metadata() if trusted else ()

    def _call(self, method: str, request: Any, timeout: float) -> None:
        import grpc

        from toolcall.channels import open_sync_channel
        from toolcall.tls import ClientTLS, TLSSettings
        from toolcall.v1 import llm_pb2_grpc

        with self._lock:
            if self._channel is None:
                # The process's own TLS and token settings (TOOLCALL_TLS_*,
                # TOOLCALL_TOKEN), as its other clients use: a worker may be
                # another program than the plugin.
                tls = ClientTLS.of(TLSSettings.from_env())
                self._channel = open_sync_channel(self.llm_address, tls=tls)
            stub = llm_pb2_grpc.LLMServiceStub(self._channel)
        try:
            getattr(stub, method)(request, timeout=timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = (exc.details() if hasattr(exc, "details") else "") or ""
            kind = JobEnded if code == "FAILED_PRECONDITION" else JobError
            raise kind(code, details) from None


# Jobs this process accepted, for ToolCallback.CancelJob (task id -> job).
_live: collections.OrderedDict[str, Job] = collections.OrderedDict()
_live_lock = threading.Lock()


def remember(job: Job) -> None:
    with _live_lock:
        _live[job.task_id] = job
        while len(_live) > MAX_LIVE_JOBS:
            _live.popitem(last=False)


def _forget(job: Job) -> None:
    with _live_lock:
        if _live.get(job.task_id) is job:
            del _live[job.task_id]


def cancel_live(task_id: str, token: str, reason: str) -> bool | None:
    """CancelJob: True when a job of this process was told; False when unknown;
    None when the token does not match (not the LLMService's word)."""
    with _live_lock:
        job = _live.get(task_id)
    if job is None:
        return False
    if not hmac.compare_digest(job.token.encode(), token.encode()):
        return None
    job._cancel(reason)
    return True
