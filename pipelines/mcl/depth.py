"""Depth parts: the depth expert (an actor pool, as in perceive) predicts a map for each RGB
image; the sample pairs the original RGB bytes with a 16-bit `depth.png` under the same key."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fusionweave.experts.base import Batch, ChainItem
from fusionweave.experts.depth import PNG, DepthExpert
from fusionweave.experts.expert import result_column
from fusionweave.pipelines.runner import PartResult
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.mcl.media import MediaError, preprocessing, valid_image
from fusionweave.pipelines.mcl.plan import MediaStats
from fusionweave.pipelines.mcl.write import READ, part_result, reject
from fusionweave.pipelines.chunks import chunk_columns
from fusionweave.transforms.mcl.record import Record

DEPTH = "depth"
READ_ERROR, READ_DETAIL, RECORD, EXT = "_read_error", "_read_detail", "_record", "_ext"


def make_expert(cfg: MclConfig) -> DepthExpert:
    return DepthExpert(cfg.depth.model, cfg.depth.revision, cfg.depth.resources(),
                       trust_remote_code=cfg.trust_remote_code)


def chain(expert: DepthExpert) -> list[ChainItem]:
    return [expert.prepare, expert, expert.postprocess]


def reader(batch_size: int, quality: int = 95) -> Any:
    def read(part: dict[str, Any]) -> Iterator[Batch]:
        items = part["records"]
        for c, start in enumerate(range(0, len(items), batch_size)):
            rows = items[start:start + batch_size]
            images, exts, widths, heights, errors, details = [], [], [], [], [], []
            for it in rows:
                try:  # upright, as the depth model sees it, so the map and its pixels share one frame
                    data, ext, w, h = valid_image(Path(it["path"]).read_bytes(), "jpg", quality)
                    err, detail = "", ""
                except OSError as e:
                    data, ext, w, h, err, detail = b"", "", 1, 1, "media_unreadable", f"{type(e).__name__}: {e}"
                except MediaError as e:
                    data, ext, w, h, err, detail = b"", "", 1, 1, e.reason, str(e)
                images.append(data)
                exts.append(ext)
                widths.append(w)
                heights.append(h)
                errors.append(err)
                details.append(detail)
            last = len(items) if start + batch_size >= len(items) else None
            yield {"key": np.array([it["record"]["key"] for it in rows], dtype=object),
                   "image": np.array(images, dtype=object), EXT: np.array(exts, dtype=object), "width": np.array(widths),
                   "height": np.array(heights), READ_ERROR: np.array(errors, dtype=object),
                   READ_DETAIL: np.array(details, dtype=object),
                   RECORD: np.array([json.dumps(it["record"]) for it in rows], dtype=object),
                   **chunk_columns(part["part"], c, len(rows), last)}
    return read


def finisher(folder: StageFolder, cfg: MclConfig, model_info: dict[str, Any]) -> Any:
    def finish(part: dict[str, Any], batch: Batch) -> PartResult:
        t0 = time.perf_counter()
        order = np.argsort(batch["key"]) if batch else []
        samples, kept, rejects, media = [], [], [], MediaStats()
        col = result_column("depth")
        for i in order:
            rec = Record(**json.loads(batch[RECORD][i]))
            if batch[READ_ERROR][i]:
                rejects.append(reject(rec, READ, batch[READ_ERROR][i], batch[READ_DETAIL][i]))
                continue
            err = json.loads(batch[col][i])["error"]
            if err:
                rejects.append(reject(rec, DEPTH, "depth_failed", err))
                continue
            w, h = int(batch["width"][i]), int(batch["height"][i])
            media.add({"width": w, "height": h})
            kept.append(rec)
            samples.append({"__key__": rec.key, batch[EXT][i]: batch["image"][i],
                            "depth.png": batch[PNG][i], **rec.members({"width": w, "height": h})})
        return part_result(folder, part, [READ, DEPTH], samples, kept, rejects, {DEPTH: time.perf_counter() - t0},
                           media, preprocessing(cfg, DEPTH, model_info))
    return finish
