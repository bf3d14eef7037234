"""Curate, stage 2: download every URL shard with img2dataset into our WebDataset shards.

img2dataset's `Downloader` runs inside a Ray task (so its spawn-based multiprocessing is never
involved) with resizing and re-encoding off: the original bytes are kept for the captioner. Its
samples are kept in memory (`MemorySampleWriter`), not written to a tar and read back.
Its per-row status and error message become our rejects; its per-shard stats go in our
manifest. Members are renamed to our stable keys.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.storage.location import Loc
from fusionweave.pipelines.curate import metadata
from fusionweave.pipelines.curate.config import CurateConfig
from fusionweave.pipelines.curate.memory_writer import MemorySampleWriter
from fusionweave.pipelines.curate.safe_http import classify_error, install
from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.lean_import import import_module_only
from fusionweave.pipelines.runner import PartResult, Stage, run_stage
from fusionweave.pipelines.storage.shard_sink import make_rejects, shard_name
from fusionweave.transforms.image_validate import sniff_format

STAGE = "download"
FETCH_STEP = "img2dataset"  # the step that names the download's rejects
CARRIED = ["key", "ord", "url", "caption", "width", "height", "similarity", "punsafe", "pwatermark", "license",
           "sample_id", "source"]


def _img2dataset_shard(cfg: CurateConfig, rows: pa.Table, work: Path,
                       shard_id: int) -> tuple[list[tuple[dict[str, Any], bytes | None]], dict[str, Any]]:
    d = cfg.download
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    feather = work / "input.feather"
    table = pa.table({"url": rows.column("url"), "caption": rows.column("caption"), "fw_key": rows.column("key")})
    with pa.OSFile(str(feather), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    # the one class the download needs, without the rest of img2dataset (pipelines/lean_import.py)
    downloader = import_module_only("img2dataset.downloader").Downloader(
        sample_writer_class=MemorySampleWriter, resizer=as_served, thread_count=d.thread_count, save_caption=True,
        extract_exif=False, output_folder=str(work), column_list=["url", "caption", "fw_key"], timeout=d.timeout,
        number_sample_per_shard=max(10, rows.num_rows), oom_shard_count=6, compute_hash=None, verify_hash_type=None,
        encode_format="jpg", retries=d.retries, user_agent_token=d.user_agent_token,
        disallowed_header_directives=d.disallowed_header_directives,
    )
    try:
        ok, _ = downloader((shard_id, str(feather)))
    finally:  # taken even when it raises: a long-lived worker must not keep a failed part's rows
        written = MemorySampleWriter.take(str(work))
    if not ok:
        raise RuntimeError(f"img2dataset failed on shard {shard_id}")
    stats_file = work / f"{shard_id:06d}_stats.json"
    i2d_stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return written, i2d_stats


def as_served(img_stream: Any, blurring_bbox_list: Any = None) -> tuple[bytes, None, None, None, None, None]:
    """img2dataset's resizer interface with resizing and re-encoding off: the bytes as served.
    (Its `Resizer(disable_all_reencoding=True)` does the same after importing albumentations and
    cv2.)"""
    return img_stream.read(), None, None, None, None, None


@dataclass
class Fetched:
    """One part's download: the images it got, in `ord` order, and a reject for every other row."""

    rows_in: int
    kept: list[dict[str, Any]]  # the part's metadata rows that have an image, by `ord`
    images: dict[str, bytes]  # key -> the bytes as served
    rejects: list[dict[str, Any]]
    img2dataset: dict[str, Any]  # its per-shard statistics

    def samples(self) -> Iterator[dict[str, Any]]:
        """The download's WebDataset samples."""
        for r in self.kept:
            data = self.images[r["key"]]
            yield {"__key__": r["key"], sniff_format(data) or "bin": data, "txt": r["caption"] or "",
                   "json": {c: r[c] for c in CARRIED}}


def fetch(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any]) -> Fetched:
    """Download one metadata part with img2dataset; the bytes stay in memory."""
    d = cfg.download
    install(cfg.url_policy.policy(), d.max_bytes, d.max_redirects, d.deadline)
    rows = store.read_parquet(part["input"]).sort_by("ord")
    shard_id = int(part["part"])
    # img2dataset's input file and statistics go to local disk (its samples stay in memory)
    scratch = store.local_scratch(folder.work / f"dl-{part['part']}")
    written, i2d_stats = _img2dataset_shard(cfg, rows, scratch, shard_id)
    shutil.rmtree(scratch, ignore_errors=True)
    row_list = rows.to_pylist()
    outcome = {meta["fw_key"]: (meta, data) for meta, data in written}
    images: dict[str, bytes] = {}
    rejects: list[dict[str, Any]] = []
    for r in row_list:  # in `ord` order, whatever order the downloads completed in
        k = r["key"]
        if k not in outcome:  # img2dataset never dropped a row in testing; if it ever does, say so
            rejects.append({"key": k, "step": FETCH_STEP, "reason": "lost_by_downloader", "url": r["url"]})
            continue
        meta, data = outcome[k]
        if meta["status"] == "success" and data is not None:
            images[k] = data
        else:
            msg = meta["error_message"] or meta["status"] or "missing from img2dataset output"
            rejects.append({"key": k, "step": FETCH_STEP, "reason": classify_error(msg), "detail": msg[:300],
                            "url": r["url"]})
    stats = {k: i2d_stats.get(k) for k in ("count", "successes", "failed_to_download", "failed_to_resize",
                                           "status_dict") if k in i2d_stats}
    return Fetched(rows.num_rows, [r for r in row_list if r["key"] in images], images, rejects, stats)


def download_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any]) -> PartResult:
    f = fetch(cfg, folder, part)
    return PartResult(f.rows_in, [FETCH_STEP], make_rejects(f.rejects, STAGE),
                      samples=f.samples() if f.kept else None, name=shard_name(int(part["part"])),
                      extra={"img2dataset": f.img2dataset})


def plan(out: Loc) -> list[dict[str, Any]]:
    entries = StageFolder(out, metadata.STAGE).entries()
    return [{"part": e.part, "input": str(out / metadata.STAGE / e.shard)}
            for e in sorted(entries.values(), key=lambda e: e.part) if e.shard]


def stage(cfg: CurateConfig, out: Loc) -> Stage:
    folder = StageFolder(out, STAGE)
    return Stage(STAGE, plan=lambda: plan(out), work=lambda p: download_part(cfg, folder, p), upstream=metadata.STAGE,
                 cpus=cfg.download.task_cpus, desc="download")


def run(cfg: CurateConfig, out: Loc, engine: Engine) -> dict[str, Any]:
    return run_stage(engine, out, stage(cfg, out))
