"""The launch templates (orchestration/launch): the KubeRay RayJob parses into what KubeRay
needs, and both it and the Slurm script are dry-run with stand-ins for python, srun, scontrol
and sleep, so the commands they would run, and their resume on exit 75, are checked without a
cluster."""
from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
import ray
import yaml

from fusionweave.orchestration.config import Recipe

LAUNCH = Path(__file__).resolve().parents[1] / "orchestration" / "launch"


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def stubs(tmp_path: Path) -> dict[str, Path | str]:
    """python (logs its arguments; a `build` exits with the next code from codes.txt), srun (runs
    the command after its options), scontrol, hostname and sleep, all logging to calls.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, codes = tmp_path / "calls.txt", tmp_path / "codes.txt"
    stub(bin_dir, "python", f'echo "python $*" >> {log}\n'
                            f'if [[ " $* " == *" build "* ]]; then code=$(head -n1 {codes}); '
                            f'sed -i 1d {codes}; exit "${{code:-0}}"; fi\n')
    stub(bin_dir, "srun", f'echo "srun $*" >> {log}\n'
                          'while [[ "$1" == -* ]]; do [[ "$1" == -w ]] && shift; shift; done\n"$@"\n')
    stub(bin_dir, "scontrol", f'echo "scontrol $*" >> {log}\n'
                              'if [ "$1" = show ]; then printf "gpu-01\\ngpu-02\\ngpu-03\\n"; fi\n')
    stub(bin_dir, "hostname", "echo 10.0.0.1\n")
    stub(bin_dir, "sleep", "")
    return {"bin": bin_dir, "log": log, "codes": codes, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def calls(stubs: dict) -> list[str]:
    return stubs["log"].read_text().splitlines() if stubs["log"].exists() else []


# --- KubeRay RayJob --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rayjob() -> tuple[dict, dict]:
    config_map, job = yaml.safe_load_all((LAUNCH / "rayjob.yaml").read_text())
    return config_map, job


def test_the_rayjob_is_what_kuberay_needs(rayjob: tuple[dict, dict]) -> None:
    config_map, job = rayjob
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__  # the version the project pins
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # KubeRay takes strings
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] and {"FW_OUT", "FW_ATTEMPTS"} <= {e["name"] for e in container["env"]}
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for w in cluster["workerGroupSpecs"]:
        assert w["minReplicas"] <= w["replicas"] <= w["maxReplicas"]
    # the recipe is the ConfigMap's, mounted where the entrypoint reads it, and a valid recipe's shape
    head = cluster["headGroupSpec"]["template"]["spec"]
    mount = head["containers"][0]["volumeMounts"][0]
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    recipe = shlex.split(spec["entrypoint"])[2].split("--config ")[1].split()[0]
    assert recipe.startswith(mount["mountPath"] + "/") and Path(recipe).name in config_map["data"]
    sections = yaml.safe_load(config_map["data"][Path(recipe).name])
    assert set(sections) <= set(Recipe.model_fields)


@pytest.mark.parametrize("codes,runs,rc", [("0", 1, 0), ("75\n75\n0", 3, 0), ("75\n75\n75", 3, 75), ("2", 1, 2)])
def test_the_rayjob_entrypoint_resumes_on_75_only(rayjob: tuple[dict, dict], stubs: dict, codes: str,
                                                  runs: int, rc: int) -> None:
    stubs["codes"].write_text(codes + "\n")
    entry = rayjob[1]["spec"]["entrypoint"]
    r = subprocess.run(["bash", "-c", entry], env={**os.environ, "PATH": stubs["PATH"], "FW_ATTEMPTS": "3",
                                                   "FW_OUT": "s3://b/out"}, capture_output=True, text=True)
    builds = [c for c in calls(stubs) if " build " in c]
    assert r.returncode == rc and len(builds) == runs, (r.stderr, calls(stubs))
    assert builds[0] == ("python -m fusionweave.orchestration.cli build curate --config /recipes/curate.yaml "
                         "--out s3://b/out --address auto --no-progress")


# --- Slurm -----------------------------------------------------------------------------------

def sbatch_options() -> dict[str, str]:
    opts = {}
    for line in (LAUNCH / "slurm.sbatch").read_text().splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH "):].partition("=")
            opts[key] = value
    return opts


def test_the_sbatch_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(LAUNCH / "slurm.sbatch")]).returncode == 0
    opts = sbatch_options()
    assert "--requeue" in opts and opts["--ntasks-per-node"] == "1" and int(opts["--nodes"]) >= 2
    assert set(opts) <= {"--job-name", "--nodes", "--ntasks-per-node", "--cpus-per-task", "--mem", "--time",
                         "--requeue", "--open-mode", "--output", "--partition", "--gres", "--account"}


@pytest.mark.parametrize("code,restarts,requeued", [(0, 0, False), (75, 0, True), (75, 3, False), (2, 0, False)])
def test_the_sbatch_script_starts_ray_runs_the_build_and_requeues_on_75(stubs: dict, tmp_path: Path, code: int,
                                                                        restarts: int, requeued: bool) -> None:
    stubs["codes"].write_text(f"{code}\n")
    env = {**os.environ, "PATH": stubs["PATH"], "SLURM_JOB_NODELIST": "gpu-[01-03]", "SLURM_JOB_ID": "42",
           "SLURM_CPUS_PER_TASK": "16", "SLURM_RESTART_COUNT": str(restarts), "FW_RECIPE": "/shared/curate.yaml",
           "FW_OUT": "s3://b/out"}
    r = subprocess.run(["bash", str(LAUNCH / "slurm.sbatch")], env=env, capture_output=True, text=True, timeout=60)
    log = calls(stubs)
    assert r.returncode == code, (r.stderr, log)
    ray_starts = [c for c in log if c.startswith("python -m ray.scripts.scripts start")]  # (in any order)
    (head,) = [c for c in ray_starts if "--head" in c]
    workers = [c for c in ray_starts if c != head]
    assert "--num-cpus=0" in head and "--port=6379" in head and "--node-ip-address=10.0.0.1" in head
    assert len(workers) == 2 and all("--address=10.0.0.1:6379" in c and "--num-cpus=16" in c for c in workers)
    assert [c for c in log if " build " in c] == [
        "python -m fusionweave.orchestration.cli build curate --config /shared/curate.yaml --out s3://b/out "
        "--address 10.0.0.1:6379 --no-progress"]
    assert ("scontrol requeue 42" in log) is requeued


def test_the_sbatch_script_refuses_to_start_without_a_recipe(stubs: dict) -> None:
    r = subprocess.run(["bash", str(LAUNCH / "slurm.sbatch")], env={**os.environ, "PATH": stubs["PATH"]},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "FW_RECIPE" in r.stderr and not calls(stubs)
