"""`fusionweave submit PIPELINE --config F --out URI` (a build as a Ray job) and
`fusionweave jobs status|logs|stop`. Errors a user can fix are one line and exit 2."""
from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any



def add_parsers(sub: Any) -> None:
    from fusionweave.orchestration.cli import add_build_args

    s = sub.add_parser("submit", help="run a build on a Ray cluster as a Ray job (resubmitting attaches to it); "
                                      "the recipe is validated and resolved here, --storage-option goes to the build")
    add_build_args(s)
    s.add_argument("--shared-path", action="store_true",
                   help="--out is a local path every node mounts at the same place (else an s3:// or gs:// URI)")
    s.add_argument("--env", dest="env_names", action="append", default=[], metavar="NAME",
                   help="also forward this environment variable (credentials are forwarded only when named)")
    s.add_argument("--with-source", action="store_true",
                   help="ship this installation's fusionweave package with the job (an image without it)")
    s.add_argument("--no-wait", action="store_true", help="return once submitted instead of following the log")
    _address(s)

    j = sub.add_parser("jobs", help="the fusionweave jobs of a Ray cluster")
    verbs = j.add_subparsers(dest="verb", required=True)
    st = verbs.add_parser("status", help="every fusionweave job, or one")
    st.add_argument("id", nargs="?", default=None)
    lg = verbs.add_parser("logs", help="a job's log")
    lg.add_argument("id")
    lg.add_argument("--follow", action="store_true", help="until the job ends")
    sp = verbs.add_parser("stop", help="stop a job (its build resumes when submitted again)")
    sp.add_argument("id")
    for p in (st, lg, sp):
        _address(p)


def _address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray Jobs server (default: $RAY_ADDRESS when it is http(s)://..., else http://127.0.0.1:8265)")


def run(args: argparse.Namespace) -> int:
    from fusionweave.orchestration.jobs_client import JobsError
    from fusionweave.pipelines.errors import BuildSetupError

    try:
        return cmd_submit(args) if args.command == "submit" else cmd_jobs(args)
    except (BuildSetupError, JobsError) as err:
        print(f"fusionweave: {err}", file=sys.stderr)
        return 2


def cmd_submit(args: argparse.Namespace) -> int:
    from fusionweave.orchestration import jobs_client as jc
    from fusionweave.orchestration.submit import plan

    with tempfile.TemporaryDirectory(prefix="fusionweave-submit-") as tmp:
        sub = plan(args.pipeline, args.config, args.out, Path(tmp) / "job", overrides=args.overrides,
                   inputs=args.inputs, stages=args.stages, shared=args.shared_path, with_source=args.with_source,
                   env_names=args.env_names, storage_options=args.storage_options)
        for path in sub.on_nodes:
            print(f"note: {path} is not shipped (a folder, or over 16 MiB): every node must see it at this path",
                  file=sys.stderr)
        address = jc.address_of(args.address)
        client = jc.connect(address)
        sid, attached = jc.submit_or_attach(client, sub)
    print(f"{'attached to the running' if attached else 'submitted'} job {sid} on {address}"
          f" ({len(sub.shipped)} recipe file(s) shipped)")
    if args.no_wait:
        return 0
    ended = jc.follow(client, sid)
    code = jc.exit_code(ended)
    if code != 0:
        print(f"fusionweave: job {sid} {ended.status} (exit {ended.exit_code}); its log: fusionweave jobs logs {sid}"
              + ("; submit the same build again to resume" if code == 75 else ""), file=sys.stderr)
    return code


def cmd_jobs(args: argparse.Namespace) -> int:
    from fusionweave.orchestration import jobs_client as jc

    client = jc.connect(jc.address_of(args.address))
    if args.verb == "status":
        jobs = [jc.info(client, args.id)] if args.id else jc.ours(client)
        for j in jobs:
            meta = j.metadata or {}
            started = datetime.fromtimestamp(j.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") \
                if j.start_time else "-"
            print(f"{j.submission_id}  {j.status.value:<9}  {meta.get('pipeline', '-'):<11}  {started}  "
                  f"{meta.get('out', '-')}")
            if args.id and j.message:
                print(f"  {j.message.strip().splitlines()[0]}")
        if not jobs:
            print("no fusionweave jobs on this cluster")
        return 0
    jc.info(client, args.id)  # an unknown id is one line
    if args.verb == "logs":
        if args.follow:
            return jc.exit_code(jc.follow(client, args.id))
        sys.stdout.write(client.get_job_logs(args.id))
        return 0
    stopped = client.stop_job(args.id)
    print(f"{'stopping' if stopped else 'already ended:'} {args.id}")
    return 0
