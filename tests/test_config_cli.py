"""Bad configuration stops the build before any work, naming the field and the problem."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fusionweave.orchestration.config import ConfigError, load_recipe
from tests.helpers import cli, write_recipe


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"URL": ["http://127.0.0.1:1/a.jpg"], "TEXT": ["a"]}), p)
    return p


def test_unknown_field(tmp_path, parquet):
    cfg = write_recipe(tmp_path / "c.yaml", parquet, metadata={"min_shortedge": 10})
    with pytest.raises(ConfigError, match=r"curate\.metadata\.min_shortedge: unknown field"):
        load_recipe(cfg)


def test_wrong_type(tmp_path, parquet):
    cfg = write_recipe(tmp_path / "c.yaml", parquet, download={"timeout": "soon"})
    with pytest.raises(ConfigError, match=r"curate\.download\.timeout: .*valid number"):
        load_recipe(cfg)


def test_missing_input_path(tmp_path):
    cfg = write_recipe(tmp_path / "c.yaml", tmp_path / "nope.parquet")
    with pytest.raises(ConfigError, match=r"curate\.metadata\.input: .*does not exist: .*nope\.parquet"):
        load_recipe(cfg)


def test_overrides_are_typed_and_validated(tmp_path, parquet):
    cfg = write_recipe(tmp_path / "c.yaml", parquet)
    r = load_recipe(cfg, ["curate.validate.phash_hamming_threshold=7", "curate.url_policy.allow_private_networks=true"])
    assert r.curate.validate_.phash_hamming_threshold == 7
    assert r.curate.url_policy.allow_private_networks is True
    with pytest.raises(ConfigError, match="phash_hamming_threshold"):
        load_recipe(cfg, ["curate.validate.phash_hamming_threshold=99"])
    with pytest.raises(ConfigError, match="a.b=value"):
        load_recipe(cfg, ["novalue"])


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("curate: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["curate"]["metadata"].update(bogus=1), "curate.metadata.bogus: unknown field"),
    (lambda d: d["curate"]["download"].update(retries="many"), "curate.download.retries"),
    (lambda d: d["curate"]["metadata"].update(input=["/no/such/file.parquet"]), "does not exist"),
])
def test_cli_stops_before_any_work(tmp_path, parquet, mutate, expected):
    cfg = write_recipe(tmp_path / "c.yaml", parquet)
    data = yaml.safe_load(cfg.read_text())
    mutate(data)
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    r = cli("build", "curate", "--config", str(cfg), "--out", str(out))
    assert r.returncode == 2
    assert expected in r.stderr
    assert not out.exists()


def test_cli_refuses_to_resume_with_another_config(tmp_path, parquet):
    from fusionweave.orchestration.build_info import ConfigMismatch, write_build_json

    out = tmp_path / "out"
    info = write_build_json(out, "curate", {"a": 1}, 0, ["x"])
    assert info["versions"]["ray"] and info["seed"] == 0
    saved = json.loads((out / "build.json").read_text())
    assert saved["pipelines"]["curate"] == {"a": 1}
    write_build_json(out, "curate", {"a": 1}, 0, ["x"])  # same config: fine
    with pytest.raises(ConfigMismatch, match="different config"):
        write_build_json(out, "curate", {"a": 2}, 0, ["x"])


def test_unknown_pipeline_and_stage(tmp_path, parquet):
    cfg = write_recipe(tmp_path / "c.yaml", parquet)
    r = cli("build", "nosuch", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown pipeline" in r.stderr
    r = cli("build", "curate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--stages", "metadata,bogus")
    assert r.returncode == 2 and "unknown stage" in r.stderr


def test_a_stage_the_config_turns_off_is_refused_naming_its_switch(tmp_path):
    """Checked before any work, for every pipeline: never skipped silently."""
    from fusionweave.orchestration.commands import check_stages, pipeline_spec
    from fusionweave.pipelines.densefusion.config import DenseFusionConfig

    spec, cfg = pipeline_spec("densefusion"), DenseFusionConfig()
    check_stages(spec, ["caption"], cfg)
    with pytest.raises(ConfigError, match=r"does not run \['teacher'\].*densefusion\.teacher\.enabled=true"):
        check_stages(spec, ["caption", "teacher"], cfg)
    check_stages(spec, ["teacher"], cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"enabled": True})}))
