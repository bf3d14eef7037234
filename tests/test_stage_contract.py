"""The stage contract: a new stage is one declared object in one file, a new filter one class
plus its config field, a new expert one class plus its config block. The runner does the
accounting, the manifest, the atomic writes and resume for all of them."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import Field

from fusionweave.datasets_cards.verify import verify_stage
from fusionweave.experts.expert import Expert, decoded
from fusionweave.pipelines.curate import metadata
from fusionweave.pipelines.fixtures.sample_laion import generate
from fusionweave.pipelines.perceive import stage as perceive_stage
from fusionweave.pipelines.perceive.chain import build_experts
from fusionweave.pipelines.config_base import WorkerConfig
from fusionweave.pipelines.perceive.config import PerceiveConfig
from fusionweave.pipelines.runner import AccountingError, PartResult, Stage, UpstreamIncomplete, commit_part, run_stage
from fusionweave.pipelines.select.inputs import plan_parts
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.storage.shard_sink import make_rejects, shard_name, write_shard
from fusionweave.pipelines.storage.shard_source import READ_SHARD, iter_image_samples
from fusionweave.transforms.metadata_filters import MetadataFilter
from fusionweave.transforms.step import Filter, StepChain
from tests.conftest import curate_cfg


@pytest.fixture(autouse=True)
def _ship_this_module_by_value() -> None:
    """Ray's workers cannot import this test module: its classes travel by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _jpg(seed: int, size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _shards(root: Path, n_shards: int = 3, per: int = 6) -> list[dict[str, Any]]:
    root.mkdir(parents=True)
    for s in range(n_shards):
        samples = [{"__key__": f"k{s}{i:03d}", "jpg": _jpg(s * 100 + i),
                    "txt": " ".join(["word"] * (i % 4)), "json": {"ord": s * per + i}} for i in range(per)]
        samples.append({"__key__": f"k{s}bad", "json": {"ord": -1}})  # no image: a read reject
        write_shard(root / shard_name(s), samples)
    return plan_parts([root])


# --- a new stage, declared in this one file ------------------------------------------------------

class FewWords(Filter):
    name = "few_words"

    def __init__(self, min_words: int):
        self.min_words = min_words

    def reasons(self, batch: pa.Table) -> list[str | None]:
        return [None if len(t.split()) >= self.min_words else "few_words" for t in batch.column("txt").to_pylist()]


def word_stage(out: Path, parts: list[dict[str, Any]], min_words: int, upstream: str | None = None) -> Stage:
    chain = StepChain([FewWords(min_words)])

    def work(part: dict[str, Any]) -> PartResult:
        rows, bad = [], []
        for s in iter_image_samples(part["input"], part.get("expected")):
            if isinstance(s, dict):
                bad.append(s)
            else:
                rows.append({"key": s.key, "txt": s.members.get("txt", b"").decode(), "image": s.members[s.image_ext]})
        table = pa.Table.from_pylist(rows, schema=pa.schema([("key", pa.string()), ("txt", pa.string()),
                                                              ("image", pa.binary())]))
        kept, refused, _ = chain(table)
        rejects = pa.concat_tables([make_rejects(bad, "words"), make_rejects(
            [{"key": k, "step": "few_words", "reason": "few_words"} for k in refused.column("key").to_pylist()],
            "words")])
        samples = [{"__key__": r["key"], "jpg": r["image"], "txt": r["txt"], "json": {"words": len(r["txt"].split())}}
                   for r in kept.to_pylist()]
        return PartResult(len(rows) + len(bad), [READ_SHARD, "few_words"], rejects, samples=samples or None,
                          name=shard_name(int(part["part"])))

    return Stage("words", plan=lambda: parts, work=work, upstream=upstream,
                 conclude=lambda entries: {"min_words": min_words})


def test_a_new_stage_is_one_declared_object(engine, tmp_path: Path) -> None:
    parts = _shards(tmp_path / "in")
    out = tmp_path / "out"
    st = run_stage(engine, out, word_stage(out, parts, min_words=2), progress=False)
    # 3 shards x (6 samples + 1 without an image); words per sample cycle 0,1,2,3
    assert (st["rows_in"], st["rows_out"], st["rejected"], st["balanced"]) == (21, 6, 15, True)
    assert st["rejects_by_reason"] == {"few_words": 12, "missing_image": 3}
    assert st["steps"][READ_SHARD] == {"rows_in": 21, "rows_out": 18, "rejects": {"missing_image": 3},
                                       "seconds": st["steps"][READ_SHARD]["seconds"]}
    assert (st["steps"]["few_words"]["rows_in"], st["steps"]["few_words"]["rows_out"]) == (18, 6)
    assert st["min_words"] == 2 and st["shards"] == 3
    entries = StageFolder(out, "words").entries()
    assert all(isinstance(e, PartEntry) and e.rows_in == e.count + e.rejected for e in entries.values())
    assert verify_stage(out / "words") == []
    rej = pq.read_table(out / "words" / "_rejects" / "shard-000000.parquet")
    assert sorted(rej.column("reason").to_pylist()) == ["few_words"] * 4 + ["missing_image"]


def test_the_runner_resumes_a_killed_stage_identically(engine, tmp_path: Path) -> None:
    parts = _shards(tmp_path / "in")
    out = tmp_path / "out"
    run_stage(engine, out, word_stage(out, parts, 2), progress=False)
    folder = StageFolder(out, "words")
    before = {p.name: p.read_bytes() for p in folder.dir.glob("shard-*.tar")}
    # as if killed after two parts: the last manifest line and `_stats.json` never made it
    lines = folder.manifest_path.read_text().splitlines()
    folder.manifest_path.write_text("\n".join(lines[:2]) + "\n")
    folder.stats_path.unlink()
    (folder.dir / shard_name(2)).unlink()
    st = run_stage(engine, out, word_stage(out, parts, 2), progress=False)
    assert st["balanced"] and st["rows_out"] == 6
    assert {p.name: p.read_bytes() for p in folder.dir.glob("shard-*.tar")} == before


def test_part_records_with_folders_in_their_names_are_found_on_resume(tmp_path: Path) -> None:
    # mcl names parts modality/split/source/NNNNNN; a resumed model stage must see those records
    folder = StageFolder(tmp_path, "nested")
    folder.prepare()
    for name in ("image/train/coco/000000", "video/test/msrvtt/000001", "_plan"):
        folder.record(PartEntry(part=name, rows_in=2, rejected=2))
    assert sorted(folder.entries()) == ["_plan", "image/train/coco/000000", "video/test/msrvtt/000001"]
    assert folder.recorded("video/test/msrvtt/000001").rows_in == 2


def test_an_unfinished_upstream_is_refused_by_name(engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "validate").mkdir(parents=True)
    (out / "validate" / "_manifest.jsonl").write_text("")
    with pytest.raises(UpstreamIncomplete, match="`validate` stage .* did not finish"):
        run_stage(engine, out, word_stage(out, [], 1, upstream="validate"), progress=False)
    assert not (out / "words").exists()


def test_counts_that_do_not_add_up_are_refused(tmp_path: Path) -> None:
    folder = StageFolder(tmp_path, "words")
    folder.prepare()
    samples = [{"__key__": "a", "txt": "x"}, {"__key__": "b", "txt": "y"}]
    with pytest.raises(AccountingError, match="2 were kept"):  # 3 in, no reject, 2 written: one lost
        commit_part(folder, {"part": "000000"}, PartResult(3, ["read"], samples=samples, name=shard_name(0)))
    with pytest.raises(AccountingError, match="not among the part's steps"):
        commit_part(folder, {"part": "000000"}, PartResult(
            3, ["read"], make_rejects([{"key": "c", "step": "typo", "reason": "r"}], "words"), samples=samples,
            name=shard_name(0)))


# --- a new filter: one class and its config field -----------------------------------------------

class MinCaptionWords(MetadataFilter):
    """Refuses captions of fewer than `curate.metadata.min_caption_words` words."""

    name = "min_caption_words"
    field = "min_caption_words"
    value: ClassVar[Any] = int

    def __init__(self, min_words: int):
        self.min_words = min_words

    def reasons(self, batch: pa.Table) -> list[str | None]:
        return [None if len((c or "").split()) >= self.min_words else "few_caption_words"
                for c in batch.column("caption").to_pylist()]


def test_a_new_filter_is_one_class_and_one_config_field(engine, tmp_path: Path) -> None:
    generate(200, tmp_path / "data", seed=3, base_url="http://127.0.0.1:9")
    parquet = tmp_path / "data" / "laion.parquet"
    words = [len((c or "").split()) for c in pq.read_table(parquet, columns=["TEXT"]).column("TEXT").to_pylist()]
    cfg = curate_cfg(parquet, metadata__min_caption_words=4)
    st = metadata.run(cfg, tmp_path / "out", engine)
    assert st["balanced"] and list(st["steps"])[-2:] == ["min_caption_words", "url_dedup"]
    step = st["steps"]["min_caption_words"]
    assert step["rejects"] == {"few_caption_words": step["rows_in"] - step["rows_out"]} and step["rows_out"] > 0
    assert step["rows_in"] - step["rows_out"] <= sum(w < 4 for w in words)
    kept = pq.read_table(tmp_path / "out" / "metadata" / "shard-000000.parquet", columns=["caption"])
    assert all(len(c.split()) >= 4 for c in kept.column("caption").to_pylist())
    with pytest.raises(ValueError, match="min_caption_words"):
        curate_cfg(parquet, metadata__min_caption_words="many")
    with pytest.raises(ValueError, match="min_caption_wordz"):
        curate_cfg(parquet, metadata__min_caption_wordz=4)  # a typo is still an unknown field


# --- a new expert: one class and its config block -----------------------------------------------

class BrightnessConfig(WorkerConfig):
    enabled: bool = True
    threshold: float = Field(0.5, ge=0, le=1)


class Brightness(Expert):
    """Mean brightness of the image, and whether it is above `threshold`."""

    name = "brightness"
    block = "brightness"
    config = BrightnessConfig

    @classmethod
    def from_config(cls, cfg: BrightnessConfig, trust_remote_code: bool) -> "Brightness":
        return cls("mean-luma", None, cfg.resources(), threshold=cfg.threshold)

    def predict(self, batch: dict[str, np.ndarray]) -> list[Any]:
        means = [float(im.mean()) / 255.0 for im in decoded(batch)]
        return [{"mean": round(m, 4), "bright": m > self.settings["threshold"]} for m in means]


def test_a_new_expert_is_one_class_and_one_config_block(engine, tmp_path: Path) -> None:
    parts = _shards(tmp_path / "in", n_shards=2, per=5)
    cfg = PerceiveConfig.model_validate({"ocr": {"enabled": False}, "brightness": {"threshold": 0.4, "batch_size": 4}})
    experts = build_experts(cfg)
    assert [e.name for e in experts] == ["brightness"]
    out = tmp_path / "out"
    st = run_stage(engine, out, perceive_stage.stage(cfg, out, parts, experts), progress=False)
    assert st["balanced"] and st["rows_out"] == 10 and st["expert_errors"] == {}
    assert st["steps"]["brightness"]["rows_in"] == 10
    docs = [json.loads(s.members["experts.json"]) for p in sorted((out / "perceive").glob("shard-*.tar"))
            for s in iter_image_samples(p) if not isinstance(s, dict)]
    assert len(docs) == 10
    for d in docs:
        r = d["experts"]["brightness"]
        assert r["error"] is None and r["settings"] == {"threshold": 0.4}
        assert 0.3 < r["results"]["mean"] < 0.7 and r["results"]["bright"] == (r["results"]["mean"] > 0.4)
    with pytest.raises(ValueError, match="threshold"):
        PerceiveConfig.model_validate({"brightness": {"threshold": 2}})
