"""`fusionweave build curate --out s3://...` against an S3-compatible server (moto) on 127.0.0.1:
the same bytes as a local build, a kill and a resume, one writer at a time, the shards read back
for training, and bad storage settings refused in one line."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest

from fusionweave.pipelines.storage.filesystems import configure
from fusionweave.pipelines.storage.location import ObjectPath
from fusionweave.pipelines.storage.store import local_scratch
from tests.helpers import ROOT, cli, write_recipe
from tests.hub_server import FakeHub
from tests.s3_server import BUCKET, keys_under, moto_s3, refusing_s3, s3_client

pytestmark = pytest.mark.heavy
STAGES = ["metadata", "download", "validate"]
ROWS = 400  # of the session's sample rows: four parts a stage


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """The server; this process reaches it through --storage-option-style settings (so Ray
    workers started before it get them pickled in the filesystem), the CLI through AWS_*."""
    with moto_s3() as env, pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONWEAVE_STORAGE_OPTIONS", "{}")
        configure({"endpoint_override": env["AWS_ENDPOINT_URL"].split("://")[1], "scheme": "http",
                   "access_key": "test", "secret_key": "test", "region": "us-east-1"})
        yield {**env, "FUSIONWEAVE_STORAGE_OPTIONS": "{}"}  # for the CLI: the AWS_* environment alone


@pytest.fixture(scope="module")
def recipe(sample_data, tmp_path_factory) -> Path:
    root, _, _ = sample_data
    d = tmp_path_factory.mktemp("s3-recipe")
    pq.write_table(pq.read_table(root / "laion.parquet").slice(0, ROWS), d / "laion.parquet")
    return write_recipe(d / "curate.yaml", d / "laion.parquet")


@pytest.fixture(scope="module")
def local(recipe: Path, tmp_path_factory, engine) -> Path:
    """The same build in a local folder, in this process (on the session's Ray)."""
    from fusionweave.orchestration.cli import main

    out = tmp_path_factory.mktemp("s3-local") / "out"
    assert main(["build", "curate", "--config", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return out


def manifest(env: dict[str, str], prefix: str, stage: str) -> dict[str, str]:
    body = s3_client(env).get_object(Bucket=BUCKET, Key=f"{prefix}/{stage}/_manifest.jsonl")["Body"].read()
    return {e["shard"]: e["sha256"] for e in map(json.loads, body.decode().splitlines()) if e.get("shard")}


def local_manifest(out: Path, stage: str) -> dict[str, str]:
    lines = (out / stage / "_manifest.jsonl").read_text().splitlines()
    return {e["shard"]: e["sha256"] for e in map(json.loads, lines) if e.get("shard")}


def one_line_refusal(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert last.startswith("fusionweave: ") and all(n in last for n in needles), last
    return last


@pytest.fixture(scope="module")
def built(s3: dict[str, str], recipe: Path) -> str:
    """A build on S3 that a second build tries to join, is SIGKILLed mid-download, and is resumed."""
    out = f"s3://{BUCKET}/killed"
    args = ["build", "curate", "--config", str(recipe), "--out", out, "--no-progress"]
    env = {**os.environ, **s3, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-m", "fusionweave.orchestration.cli", *args], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not keys_under(s3, "killed/_lease/"):
            assert first.poll() is None and time.time() < deadline, "the first build never took the lease"
            time.sleep(0.1)
        second = cli(*args, env=s3)  # the first one holds the folder
        one_line_refusal(second, 2, "being written by another build", "one build writes a folder at a time")
        while len(keys_under(s3, "killed/download/_parts/")) < 1:
            assert first.poll() is None and time.time() < deadline, "the build ended before the kill point"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert not keys_under(s3, "killed/download/_stats.json"), "the kill came after the stage finished"
    r = cli(*args, env=s3)  # the same command resumes (the killed holder's lease is taken over)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "run report" in r.stdout and "UNBALANCED" not in r.stdout
    return out


def test_killed_and_resumed_on_s3_gives_the_local_bytes_and_verifies(built: str, local: Path,
                                                                      s3: dict[str, str]) -> None:
    for stage in STAGES:
        want = local_manifest(local, stage)
        assert manifest(s3, "killed", stage) == want and want, stage
        for shard, sha in want.items():  # the bytes on the server, not only the manifest's word
            body = s3_client(s3).get_object(Bucket=BUCKET, Key=f"killed/{stage}/{shard}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == sha
    keys = keys_under(s3, "killed/")
    assert not [k for k in keys if "/_parts/" in k or "/_work/" in k or ".tmp-" in k]  # committed stages only
    lease = json.loads(s3_client(s3).get_object(Bucket=BUCKET, Key=max(k for k in keys if "_lease/" in k))["Body"].read())
    assert lease["released"]
    assert not (ROOT / "s3:").exists()


def test_verify_report_card_and_publish_read_the_s3_build(built: str, s3: dict[str, str]) -> None:
    token = "hf_s3_build_test_token"
    with FakeHub(token) as hub:
        hub_env = {**s3, "HF_ENDPOINT": hub.url, "HF_TOKEN": token, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
        runs = {"verify": (["verify", built], s3), "report": (["report", built], s3),
                # no card yet: publish renders it (plots included) into the build folder, then uploads
                "publish": (["publish", built, "--repo", "org/s3-curated"], hub_env)}
        procs = {name: subprocess.Popen([sys.executable, "-m", "fusionweave.orchestration.cli", *args], cwd=ROOT,
                                        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for name, (args, env) in runs.items()}
        done = {name: p.communicate(timeout=300) + (p.returncode,) for name, p in procs.items()}
        for name, (out, err, rc) in done.items():
            assert rc == 0, (name, err[-3000:])
        assert "ok" in done["verify"][0] and "stage validate" in done["report"][0]
        files = set(hub.repos["org/s3-curated"]["files"])
    assert {"README.md", "build.json", "validate/_manifest.jsonl", "_card/rejects_by_reason.png"} <= files
    assert {f"validate/{s}" for s in manifest(s3, "killed", "validate")} <= files
    assert "README.md" in [k.split("/", 1)[1] for k in keys_under(s3, "killed/README.md")]
    assert not local_scratch(ObjectPath(built)).exists()  # the local copy for the upload is gone


def test_training_readers_read_every_sample_back(built: str, local: Path, engine) -> None:
    from fusionweave.trainers.stream import ResumableLoader, ShardStream, ray_batches

    want = json.loads((local / "validate" / "_stats.json").read_text())["rows_out"]
    stream = ShardStream([f"{built}/validate"], batch_size=1, shuffle_buffer=0, decode=lambda s: s,
                         collate_fn=lambda b: b[0]["__key__"])
    keys = list(ResumableLoader(stream))
    assert len(keys) == len(set(keys)) == want and not stream.errors
    got = [k for b in ray_batches([f"{built}/validate"], 64) for k in b["__key__"]]
    assert sorted(got) == sorted(keys)


def test_bad_storage_settings_are_one_line_and_exit_2(recipe: Path, s3: dict[str, str]) -> None:
    with refusing_s3() as refusing:
        runs = {
            "unreachable": ({**s3, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, f"s3://{BUCKET}/x",
                            ["cannot reach http://127.0.0.1:9"]),
            "no bucket": (s3, "s3://fw-no-such-bucket/x", ["bucket fw-no-such-bucket does not exist"]),
            "credentials": ({**s3, "AWS_ENDPOINT_URL": refusing}, f"s3://{BUCKET}/x", ["access refused"]),
        }
        procs = {name: subprocess.Popen(
            [sys.executable, "-m", "fusionweave.orchestration.cli", "build", "curate", "--config", str(recipe),
             "--out", out, "--no-progress"], cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for name, (env, out, _) in runs.items()}
        for name, p in procs.items():
            out, err = p.communicate(timeout=300)
            one_line_refusal(subprocess.CompletedProcess(p.args, p.returncode, out, err), 2, "--out",
                             *runs[name][2])
    assert not keys_under(s3, "x/")


def test_beam_metadata_stage_on_s3_gives_the_rows_of_ray(s3: dict[str, str], recipe: Path, local: Path) -> None:
    # every file of the Beam run (part records, the gathered entries, the grouping's results)
    # goes through the storage layer: nothing on this machine's disk is shared with a worker
    out = f"s3://{BUCKET}/beam"
    r = cli("build", "curate", "--config", str(recipe), "--out", out, "--stages", "metadata", "--engine", "beam",
            "--no-progress", "--num-cpus", "2", env=s3)
    assert r.returncode == 0, r.stderr[-3000:]
    want = local_manifest(local, "metadata")
    assert manifest(s3, "beam", "metadata") == want and want
    keys = keys_under(s3, "beam/")
    assert not [k for k in keys if "/_work/" in k or "/_parts/" in k]
    got = json.loads(s3_client(s3).get_object(Bucket=BUCKET, Key="beam/metadata/_stats.json")["Body"].read())
    ref = json.loads((local / "metadata" / "_stats.json").read_text())
    assert [(s, v["rows_in"], v["rows_out"], v["rejects"]) for s, v in got["steps"].items()] == \
        [(s, v["rows_in"], v["rows_out"], v["rejects"]) for s, v in ref["steps"].items()]
