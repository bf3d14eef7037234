"""Refusals without tracebacks: a bad --out, a folder that is not this build's, thresholds out
of range, and I/O failures (a full disk) each end with one clear line and a non-zero exit."""
from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import typing
from pathlib import Path

import annotated_types
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from tests.helpers import cli, write_recipe

CONFIG_MODULES = ["fusionweave.pipelines.config_base", "fusionweave.pipelines.curate.config",
                  "fusionweave.pipelines.select.config", "fusionweave.pipelines.perceive.config",
                  "fusionweave.pipelines.densefusion.config", "fusionweave.pipelines.mcl.config",
                  "fusionweave.orchestration.config"]
UNBOUNDED_OK = {"seed"}  # any integer is a valid seed
BOUNDS = (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le)


def _numeric(annotation: object) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return False  # bounds given inside the type (e.g. `Annotated[int, Field(ge=1)] | Literal["auto"]`)
    if typing.get_origin(annotation) in (list, dict):
        return False
    args = typing.get_args(annotation)
    if args:
        return any(_numeric(a) for a in args if a is not type(None))
    return annotation in (int, float)


def test_every_numeric_setting_has_a_valid_range() -> None:
    unbounded = []
    for name in CONFIG_MODULES:
        mod = importlib.import_module(name)
        for cls in vars(mod).values():
            if not (inspect.isclass(cls) and issubclass(cls, BaseModel) and cls.__module__ == name):
                continue
            for field, info in cls.model_fields.items():
                if field in UNBOUNDED_OK or not _numeric(info.annotation):
                    continue
                if not any(isinstance(m, BOUNDS) for m in info.metadata):
                    unbounded.append(f"{cls.__name__}.{field}")
    assert not unbounded, f"numeric settings without a valid range: {unbounded}"


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"URL": [f"http://127.0.0.1:1/{i}.jpg" for i in range(50)], "TEXT": ["a caption"] * 50,
                             "WIDTH": [640] * 50, "HEIGHT": [480] * 50}), p)
    return p


@pytest.mark.parametrize("value", ["-5", "7"])
def test_similarity_threshold_out_of_range_names_the_field(tmp_path: Path, parquet: Path, value: str) -> None:
    out = tmp_path / "out"
    r = cli("build", "curate", "--config", str(write_recipe(tmp_path / "c.yaml", parquet)), "--out", str(out),
            "--set", f"curate.metadata.min_similarity={value}")
    assert r.returncode == 2, r.stderr
    assert "curate.metadata.min_similarity" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_caption_length_range_must_be_ordered(tmp_path: Path, parquet: Path) -> None:
    r = cli("build", "curate", "--config", str(write_recipe(tmp_path / "c.yaml", parquet)), "--out",
            str(tmp_path / "out"), "--set", "curate.metadata.caption_min_chars=50",
            "--set", "curate.metadata.caption_max_chars=10")
    assert r.returncode == 2 and "caption_min_chars" in r.stderr and "Traceback" not in r.stderr


def test_out_that_is_a_file_is_refused(tmp_path: Path, parquet: Path) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")
    r = cli("build", "curate", "--config", str(write_recipe(tmp_path / "c.yaml", parquet)), "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert "is a file, not a build folder" in r.stderr and "Traceback" not in r.stderr
    assert out.read_text() == "not a folder"


def test_folder_of_another_build_without_build_json_is_refused(tmp_path: Path, parquet: Path) -> None:
    cfg = write_recipe(tmp_path / "c.yaml", parquet)
    first = tmp_path / "first"
    r = cli("build", "curate", "--config", str(cfg), "--out", str(first), "--stages", "metadata")
    assert r.returncode == 0, r.stderr
    (first / "build.json").unlink()  # a copied or half-deleted folder: its stages are not this build's
    before = sorted(p.relative_to(first).as_posix() for p in first.rglob("*"))
    r = cli("build", "curate", "--config", str(cfg), "--out", str(first), "--stages", "metadata")
    assert r.returncode == 2, r.stderr
    assert "has no build.json" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.relative_to(first).as_posix() for p in first.rglob("*")) == before  # nothing touched


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.heavy
def test_full_disk_is_one_line_and_the_rerun_is_identical(tmp_path: Path) -> None:
    """A build that fills its disk exits 75 with one line naming the folder; nothing partial is
    left under a final name; after space is freed the same command ends as a build that never
    ran out of space would."""
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "96k"):
        pytest.skip("mounting a small tmpfs needs root with CAP_SYS_ADMIN")
    try:
        n = 4000
        p = tmp_path / "in.parquet"
        pq.write_table(pa.table({"URL": [f"http://127.0.0.1:1/{i}-{'x' * 40}.jpg" for i in range(n)],
                                 "TEXT": [f"caption number {i} " + "words " * 30 for i in range(n)],
                                 "WIDTH": [640] * n, "HEIGHT": [480] * n}), p)
        cfg = write_recipe(tmp_path / "c.yaml", p, metadata={"rows_per_shard": 500})
        args = ["build", "curate", "--config", str(cfg), "--stages", "metadata", "--no-progress"]
        r = cli(*args, "--out", str(small / "out"))
        assert r.returncode == 75, r.stderr[-2000:]
        line = [ln for ln in r.stderr.splitlines() if ln.startswith("fusionweave:")]
        assert len(line) == 1 and "No space left on device" in line[0] and str(small / "out") in line[0], r.stderr
        assert "Traceback" not in r.stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # space freed
        r = cli(*args, "--out", str(small / "out"))
        assert r.returncode == 0, r.stderr[-2000:]
        ref = cli(*args, "--out", str(tmp_path / "ref"))
        assert ref.returncode == 0, ref.stderr[-2000:]
        assert cli("verify", str(small / "out")).returncode == 0

        def shards(root: Path) -> dict[str, bytes]:
            return {q.name: q.read_bytes() for q in sorted((root / "metadata").glob("shard-*"))}

        assert shards(small / "out") == shards(tmp_path / "ref") and len(shards(tmp_path / "ref")) == n // 500
        stats = json.loads((small / "out" / "metadata" / "_stats.json").read_text())
        assert stats["rows_in"] == stats["rows_out"] + stats["rejected"] == n
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
