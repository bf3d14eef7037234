"""Which Arrow memory pool Ray's workers use.

pyarrow's default pool (mimalloc) keeps the pages a task freed until its process allocates again,
so a worker that ran one of Ray Data's shuffle tasks (which, unlike our own tasks, do not call
`release_unused` after them) and then sat idle held about 250 MiB: the metadata stage's peak USS
grew 1.16-1.24x for 10x the rows, the growth all in idle workers. jemalloc hands pages back after
its decay even in an idle process: 1.00-1.08x on the same builds (glibc's malloc: 1.05-1.08x).
"""
from __future__ import annotations

import os

import pyarrow as pa

ENV = "ARROW_DEFAULT_MEMORY_POOL"
PREFERRED = ("jemalloc", "system")


def worker_pool() -> str | None:
    """The pool to name for the workers: the user's own choice wins (None: leave it), else the
    first of PREFERRED this pyarrow build has."""
    if os.environ.get(ENV):
        return None
    return next((b for b in PREFERRED if b in pa.supported_memory_backends()), None)


def set_for_local_workers() -> None:
    """Name the pool in this process's environment, which the embedded session's raylet, and so
    each worker it starts, inherits. This process's own pool is fixed at its first allocation."""
    pool = worker_pool()
    if pool:
        os.environ[ENV] = pool
