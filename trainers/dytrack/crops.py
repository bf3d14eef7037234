"""Square crops around a box (OSTrack's sample_target) and the box maps between a crop and its
frame. A crop of side factor * sqrt(w*h) centred on the box, resized to `out` pixels; what lies
outside the frame is zero. Boxes are x, y, w, h in frame pixels; crop boxes cx, cy, w, h in
[0, 1] of the crop."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def crop_region(box: np.ndarray, factor: float) -> tuple[float, float, float]:
    """(x0, y0, side) of the crop around `box`."""
    x, y, w, h = (float(v) for v in box)
    side = max(1.0, math.sqrt(max(w, 1e-3) * max(h, 1e-3)) * factor)
    return x + w / 2 - side / 2, y + h / 2 - side / 2, side


def crop(frame: Image.Image, region: tuple[float, float, float], out: int) -> np.ndarray:
    """The region resized to out x out (uint8 HWC)."""
    x0, y0, side = region
    patch = frame.crop((int(round(x0)), int(round(y0)), int(round(x0 + side)), int(round(y0 + side))))
    return np.asarray(patch.resize((out, out), Image.BILINEAR))


def to_crop(box: np.ndarray, region: tuple[float, float, float]) -> np.ndarray:
    x0, y0, side = region
    x, y, w, h = (float(v) for v in box)
    return np.array([(x + w / 2 - x0) / side, (y + h / 2 - y0) / side, w / side, h / side], dtype=np.float32)


def to_frame(cbox: np.ndarray, region: tuple[float, float, float]) -> np.ndarray:
    x0, y0, side = region
    cx, cy, w, h = (float(v) for v in cbox)
    return np.array([x0 + (cx - w / 2) * side, y0 + (cy - h / 2) * side, w * side, h * side])


def jitter(box: np.ndarray, scale: float, centre: float, rng: np.random.Generator) -> np.ndarray:
    """OSTrack's jitter: size x exp(N(0, scale)), centre moved by up to centre x sqrt(w*h) / 2."""
    x, y, w, h = (float(v) for v in box)
    size = np.array([w, h]) * np.exp(rng.normal(0, 1, 2) * scale)
    c = np.array([x + w / 2, y + h / 2]) + math.sqrt(max(size.prod(), 1e-6)) * centre * (rng.random(2) - 0.5)
    return np.array([c[0] - size[0] / 2, c[1] - size[1] / 2, size[0], size[1]])


def clip_box(box: np.ndarray, width: int, height: int, min_size: float) -> np.ndarray:
    """A tracked box kept inside the frame (its centre) and no smaller than min_size."""
    x, y, w, h = (float(v) for v in box)
    cx = min(max(x + w / 2, 0.0), width)
    cy = min(max(y + h / 2, 0.0), height)
    w, h = min(max(w, min_size), width), min(max(h, min_size), height)
    return np.array([cx - w / 2, cy - h / 2, w, h])
