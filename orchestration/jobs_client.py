"""A Ray Jobs server, as `fusionweave submit` and `fusionweave jobs` use it: submit a build or
attach to the one already running, follow its log, report how it ended."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from fusionweave.orchestration.submit import ID_PREFIX, Submission

DEFAULT_ADDRESS = "http://127.0.0.1:8265"


class JobsError(RuntimeError):
    """One line for the user: an unreachable server, an unknown job."""


@dataclass
class Ended:
    submission_id: str
    status: str
    exit_code: int | None
    message: str


def address_of(given: str | None) -> str:
    """--address, else $RAY_ADDRESS when it is the Jobs (HTTP) address, else the local default."""
    env = os.environ.get("RAY_ADDRESS", "")
    return given or (env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS)


def connect(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as err:  # noqa: BLE001 - the SDK raises ConnectionError, AuthenticationError, ValueError, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise JobsError(f"cannot reach the Ray Jobs server at {address}: {first}") from None


def ours(client: Any) -> list[Any]:
    """This cluster's fusionweave jobs, oldest first."""
    jobs = [j for j in client.list_jobs() if (j.submission_id or "").startswith(ID_PREFIX)]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def submit_or_attach(client: Any, sub: Submission) -> tuple[str, bool]:
    """The id of the job running this build (attached: True), or of a new job for it. A build
    that ran before and ended gets a new attempt, `-2`, `-3`, ...: the build resumes."""
    same = [j for j in ours(client) if j.submission_id == sub.base_id or j.submission_id.startswith(sub.base_id + "-")]
    running = [j for j in same if not j.status.is_terminal()]
    if running:
        return running[-1].submission_id, True
    sid = sub.base_id if not same else f"{sub.base_id}-{len(same) + 1}"
    client.submit_job(entrypoint=sub.entrypoint, submission_id=sid, runtime_env=sub.runtime_env(),
                      metadata={"pipeline": sub.pipeline, "out": str(sub.out)})
    return sid, False


def info(client: Any, sid: str) -> Any:
    try:
        return client.get_job_info(sid)
    except RuntimeError as err:  # the SDK's "Request failed with status code 404: Job ... does not exist."
        raise JobsError(f"no job {sid!r} on this cluster (`fusionweave jobs status` lists them)") from err


def follow(client: Any, sid: str, stream: TextIO = sys.stdout, poll_s: float = 1.0) -> Ended:
    """Print the job's log as the server streams it, then how the job ended."""
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(sid):
            stream.write(chunk)
            stream.flush()

    info(client, sid)  # an unknown id is one line
    try:
        asyncio.run(tail())
    except RuntimeError as err:  # the log's connection dropped before the job ended
        raise JobsError(f"lost the log of job {sid} ({err}); `fusionweave jobs logs {sid} --follow` follows "
                        "it again") from None
    while not (job := info(client, sid)).status.is_terminal():  # the stream ends just before the status does
        time.sleep(poll_s)
    return Ended(sid, str(job.status.value), job.driver_exit_code, (job.message or "").strip())


def exit_code(ended: Ended) -> int:
    """SUCCEEDED 0; a build's own codes pass through (2: refused, 75: rerun to resume); else 1."""
    if ended.status == "SUCCEEDED":
        return 0
    if ended.status == "STOPPED":
        return 130
    return ended.exit_code if ended.exit_code in (2, 75) else 1
