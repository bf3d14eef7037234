"""Tracking a sequence with dynamic exits: the template is cut once from the first frame's
ground-truth box; each later frame is searched around the previous box (4x its size) and stops
at the first exit whose confidence reaches its threshold."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from fusionweave.trainers.dytrack.config import ModelConfig, TrackConfig
from fusionweave.trainers.dytrack.crops import clip_box, crop, crop_region, to_frame
from fusionweave.trainers.dytrack.data import Frame
from fusionweave.trainers.dytrack.model import DyTrackNet


@dataclass
class TrackResult:
    boxes: np.ndarray  # (n, 4) x, y, w, h; frame 0 is the given box
    times: np.ndarray  # (n,) seconds per frame (frame 0: the initialisation)
    exits: np.ndarray  # (n,) exit index per frame (-1: the first frame)
    depths: np.ndarray  # (n,) layers run per frame (0: the first frame)


def hann(grid: int) -> torch.Tensor:
    w = torch.hann_window(grid + 2, periodic=False)[1:-1]
    return w[:, None] * w[None, :]


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]


@torch.no_grad()
def track_sequence(net: DyTrackNet, frames: list[Frame], thresholds: list[float], cfg: TrackConfig,
                   device: torch.device | str = "cpu") -> TrackResult:
    m: ModelConfig = net.cfg
    net.eval()
    t0 = time.perf_counter()
    box = np.array(frames[0]["box"], dtype=np.float64)
    template = as_tensor(crop(frames[0]["image"], crop_region(box, m.template_factor), m.template_size)).to(device)
    window = hann(net.grid_s).to(device) if cfg.hann_window else None
    n = len(frames)
    boxes, times = np.zeros((n, 4)), np.zeros(n)
    exits, depths = np.full(n, -1), np.zeros(n, dtype=np.int64)
    boxes[0], times[0] = box, time.perf_counter() - t0
    for i in range(1, n):
        t0 = time.perf_counter()
        img = frames[i]["image"]
        region = crop_region(box, m.search_factor)
        search = as_tensor(crop(img, region, m.search_size)).to(device)
        cbox, _, k, depth = net.track_step(template, search, thresholds, window)
        pred = to_frame(cbox.cpu().numpy(), region)
        # the size follows the prediction at rate size_lr (a small model's size errors compound
        # through the next search region otherwise); the centre follows it fully
        size = (1 - cfg.size_lr) * box[2:] + cfg.size_lr * pred[2:]
        centre = pred[:2] + pred[2:] / 2
        box = clip_box(np.r_[centre - size / 2, size], img.width, img.height, cfg.min_size)
        boxes[i], exits[i], depths[i] = box, k, depth
        times[i] = time.perf_counter() - t0
    return TrackResult(boxes, times, exits, depths)
