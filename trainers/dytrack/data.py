"""Template/search pairs streamed from the tracking shards, resumably.

The tracking build writes one shard per sequence, frames in order. The stream reads them in
order (no shuffle buffer) in windows of `window` consecutive frames (`ShardStream` batches, so
`ResumableLoader` keeps the position); each window gives `pairs` pairs: a template frame and a
search frame of the same sequence, both visible, at most `max_gap` frames apart, the search
crop jittered in centre and scale (OSTrack's augmentation). The draws are seeded by the
window's first key and the epoch, so a resumed run draws the same pairs. Shard order changes
each epoch (the stream's plan)."""
from __future__ import annotations

import io
import json
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fusionweave.trainers.dytrack.config import DyTrackConfig
from fusionweave.trainers.dytrack.crops import crop, crop_region, jitter, to_crop
from fusionweave.trainers.stream import CorruptSample, ResumableLoader, ShardStream

Frame = dict[str, Any]


def decode_frame(raw: dict[str, Any]) -> Frame:
    """A frame sample: the image (PIL, RGB) and its JSON."""
    img = next((raw[k] for k in ("jpg", "jpeg", "png") if k in raw), None)
    if img is None or "json" not in raw:
        raise CorruptSample(f"{raw['__key__']}: no image or json", "not_a_tracking_frame")
    try:
        meta = json.loads(raw["json"])
        image = Image.open(io.BytesIO(img)).convert("RGB")
    except Exception as err:  # noqa: BLE001 - the sample's failure, counted by the stream
        raise CorruptSample(f"{raw['__key__']}: {type(err).__name__}", "corrupt_frame") from None
    return {"key": raw["__key__"], "image": image, **meta}


def usable(f: Frame) -> bool:
    return bool(f.get("visible")) and f.get("box") is not None and f["box"][2] > 0 and f["box"][3] > 0


class PairMaker:
    """Collates a window of frames into a batch of pairs (a picklable callable for workers)."""

    def __init__(self, cfg: DyTrackConfig, epoch_of: Any):
        self.cfg, self.epoch_of = cfg, epoch_of

    def __call__(self, frames: list[Frame]) -> dict[str, torch.Tensor]:
        m, s = self.cfg.model, self.cfg.sampler
        rng = np.random.default_rng([zlib.crc32(frames[0]["key"].encode()), self.epoch_of()])
        by_seq: dict[str, list[Frame]] = defaultdict(list)
        for f in frames:
            if usable(f):
                by_seq[f"{f['source']}/{f['sequence']}"].append(f)
        pools = [v for v in by_seq.values() if len(v) >= 2] or [v for v in by_seq.values() if v]
        if not pools:  # a window of invisible frames only: pairs of nothing would teach nothing
            return {}
        out: dict[str, list[Any]] = defaultdict(list)
        for _ in range(s.pairs):
            seq = pools[int(rng.integers(len(pools)))]
            t = seq[int(rng.integers(len(seq)))]
            near = [f for f in seq if abs(f["frame"] - t["frame"]) <= s.max_gap] or [t]
            q = near[int(rng.integers(len(near)))]
            t_region = crop_region(jitter(np.array(t["box"]), s.template_scale_jitter, s.template_center_jitter, rng),
                                   m.template_factor)
            s_region = crop_region(jitter(np.array(q["box"]), s.scale_jitter, s.center_jitter, rng), m.search_factor)
            out["template"].append(crop(t["image"], t_region, m.template_size))
            out["search"].append(crop(q["image"], s_region, m.search_size))
            out["box"].append(to_crop(np.array(q["box"]), s_region))
        return {"template": torch.from_numpy(np.stack(out["template"])).permute(0, 3, 1, 2).contiguous(),
                "search": torch.from_numpy(np.stack(out["search"])).permute(0, 3, 1, 2).contiguous(),
                "box": torch.from_numpy(np.stack(out["box"]))}


def pair_loader(cfg: DyTrackConfig, rank: int, world: int) -> ResumableLoader:
    s = cfg.sampler
    stream = ShardStream([str(p) for p in cfg.train], s.window, rank=rank, world_size=world, workers=s.workers,
                         seed=cfg.recipe.seed, shuffle_buffer=1, decode=decode_frame)
    stream.collate_fn = PairMaker(cfg, lambda: stream.epoch)
    return ResumableLoader(stream)


def read_sequences(paths: list[Path]) -> list[list[Frame]]:
    """Every sequence of the given tracking shards, frames in order (evaluation)."""
    from fusionweave.trainers.shard_plan import shard_counts
    from fusionweave.trainers.stream import raw_samples
    from collections import Counter

    seqs: dict[str, list[Frame]] = {}
    errors: Counter = Counter()
    for shard in shard_counts([str(p) for p in paths]):
        for raw in raw_samples(shard, errors):
            f = decode_frame(raw)
            seqs.setdefault(f"{f['source']}/{f['sequence']}", []).append(f)
    return [sorted(v, key=lambda f: f["frame"]) for _, v in sorted(seqs.items())]
