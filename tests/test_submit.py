"""`fusionweave submit` and `fusionweave jobs`: refusals before anything is uploaded, what a
submission carries, and (heavy) a build run as a Ray job on a local head with its Jobs server."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from fusionweave.orchestration.config import ConfigError
from fusionweave.orchestration.submit import FORWARDED_ENV, plan
from fusionweave.pipelines.storage.location import location
from tests.helpers import cli, stage_shards, write_recipe


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    parquet = tmp_path / "rows.parquet"
    parquet.write_bytes(b"PAR1 not really, but a file")  # plan() never reads it
    return write_recipe(tmp_path / "c.yaml", parquet)


def test_relative_or_local_out_is_refused_before_contacting_anyone(recipe: Path, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens: contacting it would be a different error
    r = cli("submit", "curate", "--config", str(recipe), "--out", "rel/out", "--address", dead)
    assert r.returncode == 2 and "relative path means nothing on the cluster" in r.stderr, r.stderr
    r = cli("submit", "curate", "--config", str(recipe), "--out", str(tmp_path / "o"), "--address", dead)
    assert r.returncode == 2 and "--shared-path" in r.stderr and "Traceback" not in r.stderr
    r = cli("submit", "select", "--config", str(recipe), "--out", "s3://bucket/x", "--address", dead)
    assert r.returncode == 2 and "object storage" in r.stderr
    r = cli("submit", "curate", "--config", str(recipe), "--out", "s3://bucket/x", "--stages", "nope", "--address", dead)
    assert r.returncode == 2 and "unknown stage" in r.stderr
    r = cli("submit", "curate", "--config", str(recipe), "--out", "s3://bucket/x", "--env", "FW_NOT_SET_ANYWHERE",
            "--address", dead)
    assert r.returncode == 2 and "FW_NOT_SET_ANYWHERE" in r.stderr
    # a valid submission reaches the (absent) server and says so in one line
    r = cli("submit", "curate", "--config", str(recipe), "--out", "s3://bucket/x", "--address", dead)
    assert r.returncode == 2 and f"cannot reach the Ray Jobs server at {dead}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = cli("jobs", "status", "--address", dead)
    assert r.returncode == 2 and "cannot reach" in r.stderr


def test_bad_recipes_are_refused_here(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"curate": {"metadata": {"input": [str(tmp_path / "missing.parquet")]}}}))
    with pytest.raises(ConfigError, match="does not exist"):
        plan("curate", bad, location("s3://b/x"), tmp_path / "job")
    with pytest.raises(ConfigError, match="unknown pipeline"):
        plan("nope", bad, location("s3://b/x"), tmp_path / "job")


def test_what_a_submission_carries(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load(recipe.read_text())
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "rows.parquet").write_bytes(b"another file of the same name")
    data["curate"]["metadata"]["input"].append(str(tmp_path / "more" / "rows.parquet"))
    recipe.write_text(yaml.safe_dump(data))
    for name in FORWARDED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("MY_FLAG", "on")
    sub = plan("curate", recipe, location("s3://bucket/out"), tmp_path / "job", stages="metadata",
               storage_options=["scheme=http"])
    job = yaml.safe_load((tmp_path / "job" / "recipe.yaml").read_text())
    assert job["curate"]["metadata"]["input"] == ["files/000/rows.parquet", "files/001/rows.parquet"]
    assert (tmp_path / "job" / "files" / "000" / "rows.parquet").read_bytes() == (tmp_path / "rows.parquet").read_bytes()
    assert (tmp_path / "job" / "files" / "001" / "rows.parquet").read_bytes() == b"another file of the same name"
    assert sub.shipped == sorted([str(tmp_path / "rows.parquet"), str(tmp_path / "more" / "rows.parquet")])
    assert sub.env == {"HF_HUB_OFFLINE": "1"}  # credentials travel only when named
    assert "--stages metadata" in sub.entrypoint and "--storage-option=scheme=http" in sub.entrypoint
    assert sub.entrypoint.startswith("python -m fusionweave.orchestration.cli build curate --config recipe.yaml")
    named = plan("curate", recipe, location("s3://bucket/out"), tmp_path / "job2", stages="metadata",
                 storage_options=["scheme=http"], env_names=["AWS_SECRET_ACCESS_KEY", "MY_FLAG"])
    assert named.env == {"HF_HUB_OFFLINE": "1", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "MY_FLAG": "on"}
    # the id is the build's: the same build gets the same id, another OUT or recipe another one
    assert named.base_id == sub.base_id and sub.base_id.startswith("fusionweave-curate-")
    assert plan("curate", recipe, location("s3://bucket/other"), tmp_path / "job3").base_id != sub.base_id
    (tmp_path / "rows.parquet").write_bytes(b"other bytes")
    assert plan("curate", recipe, location("s3://bucket/out"), tmp_path / "job4", stages="metadata",
                storage_options=["scheme=http"]).base_id != sub.base_id
    src = plan("curate", recipe, location("s3://bucket/out"), tmp_path / "job5", with_source=True)
    pkg = Path(src.py_modules[0])
    assert pkg.name == "fusionweave" and (pkg / "orchestration" / "cli.py").is_file()
    assert list((pkg / "configs").glob("*.yaml")) and (pkg / "pipelines" / "runner.py").is_file()
    assert not list(pkg.rglob("__pycache__"))


def test_folders_named_by_a_recipe_are_listed_for_the_nodes(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.tar").write_bytes(b"")
    cfg = tmp_path / "s.yaml"
    model = tmp_path / "clip"
    model.mkdir()
    cfg.write_text(yaml.safe_dump({"select": {"input": [str(shards)], "embed": {"model": str(model)}}}))
    sub = plan("select", cfg, tmp_path / "out", tmp_path / "job", shared=True)
    assert sub.on_nodes == [str(model), str(shards)] and sub.shipped == []


# ---------------------------------------------------------------- on a Ray head with its Jobs server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jobs_head() -> Iterator[dict[str, str]]:
    """`ray start --head --block` with the dashboard (Jobs), token auth as Ray 2.60 clusters use,
    in its own process group and temp dir; stopped by killing that group (never `ray stop`)."""
    temp = tempfile.mkdtemp(prefix="fwj", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    dash = _free_port()
    ports = ["--port", _free_port(), "--dashboard-port", dash, "--dashboard-agent-listen-port", _free_port(),
             "--dashboard-agent-grpc-port", _free_port(), "--metrics-export-port", _free_port(),
             "--runtime-env-agent-port", _free_port(), "--node-manager-port", _free_port(),
             "--object-manager-port", _free_port(), "--ray-client-server-port", _free_port()]
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--include-dashboard", "true", "--num-cpus", "2", "--temp-dir", temp,
                             "--disable-usage-stats", *map(str, ports)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401: up, and asking for the token
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    pytest.fail("the Ray head with its Jobs server did not start")
                time.sleep(0.5)
        yield {"address": address, **{k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.heavy
def test_a_build_runs_as_a_ray_job_and_resubmitting_attaches(jobs_head: dict[str, str], curate_recipe: Path,
                                                             curate_reference: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in jobs_head.items() if k != "address"}
    address = jobs_head["address"]
    out = tmp_path / "shared" / "out"  # "shared": this one machine is every node
    args = ["submit", "curate", "--config", str(curate_recipe), "--out", str(out), "--shared-path",
            "--stages", "metadata", "--address", address]
    r = cli(*args, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    first = r.stdout.split("submitted job ", 1)[1].split()[0]
    st = json.loads((curate_reference / "metadata" / "_stats.json").read_text())
    line = f"stage metadata: in {st['rows_in']:,} = out {st['rows_out']:,} + rejected {st['rejected']:,} [ok]"
    assert line in r.stdout  # the job's log, followed
    assert stage_shards(out, "metadata") == stage_shards(curate_reference, "metadata")
    # the same build while it runs: attached, not run twice
    out2 = tmp_path / "shared" / "out2"
    again = [a if a != str(out) else str(out2) for a in args] + ["--no-wait"]
    r1, r2 = cli(*again, env=env), cli(*again, env=env)
    assert r1.returncode == r2.returncode == 0, r1.stderr + r2.stderr
    sid = r1.stdout.split("submitted job ", 1)[1].split()[0]
    assert f"attached to the running job {sid}" in r2.stdout, r2.stdout
    r = cli("jobs", "logs", sid, "--follow", "--address", address, env=env)
    assert r.returncode == 0 and line in r.stdout
    status = cli("jobs", "status", "--address", address, env=env)
    assert f"{first}  SUCCEEDED" in status.stdout and f"{sid}  SUCCEEDED" in status.stdout
    assert stage_shards(out2, "metadata") == stage_shards(curate_reference, "metadata")
    # submitted again once it ended: a new attempt of the same build, which finds it done
    r = cli(*args, env=env)
    assert r.returncode == 0 and f"submitted job {first}-2" in r.stdout, r.stdout[-2000:]
    r = cli("jobs", "stop", f"{first}-2", "--address", address, env=env)
    assert r.returncode == 0 and "already ended" in r.stdout
    r = cli("jobs", "logs", "fusionweave-curate-nope", "--address", address, env=env)
    assert r.returncode == 2 and "no job 'fusionweave-curate-nope'" in r.stderr
