"""One writer per build folder: a lease object, on local disk and on an object store alike.

The lease is a series of generations, `OUT/_lease/NNNNNNNNNN.json`, each created conditionally
(`store.create`), so of two builds that try to take the same generation exactly one wins. A
holder renews its generation (a heartbeat) every third of the lease's time to live. A build
may take the next generation only when the latest one was released, lapsed (no heartbeat for
`ttl` seconds) or belongs to a process of this machine that is gone (a killed build resumes at
once). A holder that finds a newer generation than its own has lost the folder and stops."""
from __future__ import annotations

import _thread
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.filesystems import redacted
from fusionweave.pipelines.storage.location import Loc, location

log = logging.getLogger(__name__)

LEASE = "_lease"
TTL_ENV = "FUSIONWEAVE_LEASE_TTL_S"
TTL = 120.0  # seconds without a heartbeat after which a lease from another machine lapses

_lost: str | None = None  # why this process's build was stopped, for the CLI's last line


class LeaseHeld(BuildSetupError):
    pass


def lost_reason() -> str | None:
    return _lost


def _machine() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot[:8]}"


def _started(pid: int) -> str | None:
    """When a process started (Linux), so a reused pid is not taken for the lease's holder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _gone(holder: dict[str, Any]) -> bool:
    """Whether the holder is a process of this machine that no longer runs."""
    if holder.get("machine") != _machine():
        return False
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return holder.get("process_started") not in (None, _started(pid))


class Lease:
    def __init__(self, out: str | os.PathLike | Loc, ttl: float | None = None):
        self.out = location(out)
        self.dir = self.out / LEASE
        self.ttl = float(ttl or os.environ.get(TTL_ENV) or TTL)
        self.gen: int | None = None
        self.id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _path(self, gen: int) -> Loc:
        return self.dir / f"{gen:010d}.json"

    def _generations(self) -> list[int]:
        return sorted(int(n[:-5]) for n in store.files(self.dir) if n.endswith(".json") and n[:-5].isdigit())

    def _record(self, released: bool = False) -> bytes:
        now = time.time()
        return json.dumps({"holder": self.id, "machine": _machine(), "pid": os.getpid(),
                           "process_started": _started(os.getpid()), "heartbeat": now,
                           "expires": 0 if released else now + self.ttl, "released": released,
                           "command": " ".join(redacted(sys.argv))[:500]}).encode()

    def acquire(self) -> "Lease":
        gens = self._generations()
        gen = 0
        if gens:
            try:
                held = json.loads(store.read_bytes(self._path(gens[-1])))
            except (FileNotFoundError, ValueError):
                held = {}
            if held and not held.get("released") and held.get("expires", 0) > time.time() and not _gone(held):
                raise LeaseHeld(_held_message(self.out, held))
            gen = gens[-1] + 1
        if not store.create(self._path(gen), self._record()):
            raise LeaseHeld(f"{self.out}: another build took this build folder's lease at the same moment; "
                            "one build writes a folder at a time")
        self.gen = gen
        self._thread = threading.Thread(target=self._beat, name="fusionweave-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        global _lost
        while not self._stop.wait(self.ttl / 3):
            try:
                newer = [g for g in self._generations() if g > (self.gen or 0)]
                if newer:
                    _lost = (f"another build took over {self.out} (its lease lapsed without a heartbeat); "
                             "this build stopped")
                    log.error(_lost)
                    _thread.interrupt_main()
                    return
                store.put_bytes(self._path(self.gen or 0), self._record())
            except OSError as err:  # the next beat tries again; the lease lapses only after `ttl`
                log.warning("could not renew the lease of %s: %s", self.out, err)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.gen is not None and _lost is None:
            store.put_bytes(self._path(self.gen), self._record(released=True))
        self.gen = None

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _held_message(out: Loc, held: dict[str, Any]) -> str:
    ago = time.time() - float(held.get("heartbeat", 0))
    lapses = max(0.0, float(held.get("expires", 0)) - time.time())
    return (f"{out} is being written by another build (pid {held.get('pid')} on {held.get('machine', '?')}, "
            f"heartbeat {ago:.0f} s ago): one build writes a folder at a time; wait for it to end, or, if it was "
            f"killed on another machine, rerun in {lapses:.0f} s, when its lease lapses")
