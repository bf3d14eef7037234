"""Video frames as MCL reads them: PyAV decode, 5 frames at 224x224, always RGB (the original
eval path read BGR by mistake). Train: 2 random frames from each half, then the last repeated;
eval: evenly spaced, both ends included. Only the chosen frames are converted to RGB, so a long
video costs a decode pass, not its frames' memory."""
from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np

FRAMES = 5
SIZE = 224


class VideoError(ValueError):
    def __init__(self, message: str, reason: str = "video_undecodable"):
        super().__init__(message)
        self.reason = reason


@dataclass
class Clip:
    frames: list[np.ndarray]  # RGB uint8, size x size, in sampling order
    indices: list[int]
    total: int  # frames in the video
    seconds: float


def train_indices(n: int, rng: random.Random, frames: int = FRAMES) -> list[int]:
    if n < 1:
        raise VideoError("the video has no frames", "video_empty")
    half = n // 2
    first = sorted(rng.sample(range(max(half, 1)), min(2, max(half, 1))))
    second = sorted(rng.sample(range(half, n), min(2, n - half))) if n - half else []
    idx = first + second
    while len(idx) < frames:
        idx.append(idx[-1])  # the last frame repeated
    return idx[:frames]


def eval_indices(n: int, frames: int = FRAMES) -> list[int]:
    if n < 1:
        raise VideoError("the video has no frames", "video_empty")
    return [int(round(x)) for x in np.linspace(0, n - 1, frames)]


def _count(data: bytes) -> tuple[int, float]:
    """Frames and seconds from the container; packets are counted when the header has no count."""
    import av

    with av.open(io.BytesIO(data), metadata_errors="ignore") as c:
        s = c.streams.video[0]
        n = s.frames or sum(1 for p in c.demux(s) if p.size)
        if s.duration is not None and s.time_base is not None:
            seconds = float(s.duration * s.time_base)
        else:
            seconds = n / float(s.average_rate) if s.average_rate else 0.0
    return n, seconds


def _decode(data: bytes, idx: list[int], size: int) -> tuple[dict[int, np.ndarray], int]:
    """The frames at `idx` (RGB, resized) and how many frames were decoded in all."""
    import av

    wanted, got, count = set(idx), {}, 0
    with av.open(io.BytesIO(data), metadata_errors="ignore") as c:
        for i, f in enumerate(c.decode(c.streams.video[0])):
            count = i + 1
            if i in wanted:
                got[i] = f.to_ndarray(format="rgb24", width=size, height=size)
            if i >= max(idx):
                break
    return got, count


def clip(data: bytes, train: bool, seed: int, size: int = SIZE, frames: int = FRAMES) -> Clip:
    def pick(n: int) -> list[int]:
        return train_indices(n, random.Random(seed), frames) if train else eval_indices(n, frames)

    try:
        n, seconds = _count(data)
        idx = pick(n)
        got, count = _decode(data, idx, size)
        if len(got) < len(set(idx)):  # the header promised more frames than decode gives
            n = count
            idx = pick(n)
            got, count = _decode(data, idx, size)
    except VideoError:
        raise
    except Exception as err:  # noqa: BLE001 - FFmpeg, container and stream errors: this video's reject
        raise VideoError(f"undecodable video: {type(err).__name__}: {err}") from None
    if len(got) < len(set(idx)):
        raise VideoError(f"only {count} frames decode", "video_empty")
    return Clip([got[i] for i in idx], idx, n, seconds)


def sample(data: bytes, train: bool, seed: int, size: int = SIZE) -> tuple[list[np.ndarray], list[int]]:
    c = clip(data, train, seed, size)
    return c.frames, c.indices
