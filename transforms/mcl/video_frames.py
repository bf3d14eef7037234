"""Video frames as MCL reads them: PyAV decode, 5 frames at 224x224, always RGB (the original
eval path read BGR by mistake). Train: 2 random frames from each half, then the last repeated;
eval: evenly spaced, both ends included."""
from __future__ import annotations

import io
import random

import numpy as np

FRAMES = 5
SIZE = 224


class VideoError(ValueError):
    pass


def train_indices(n: int, rng: random.Random, frames: int = FRAMES) -> list[int]:
    if n < 1:
        raise VideoError("the video has no frames")
    half = n // 2
    first = sorted(rng.sample(range(max(half, 1)), min(2, max(half, 1))))
    second = sorted(rng.sample(range(half, n), min(2, n - half))) if n - half else []
    idx = first + second
    while len(idx) < frames:
        idx.append(idx[-1])  # the last frame repeated
    return idx[:frames]


def eval_indices(n: int, frames: int = FRAMES) -> list[int]:
    if n < 1:
        raise VideoError("the video has no frames")
    return [int(round(x)) for x in np.linspace(0, n - 1, frames)]


def decode_rgb(data: bytes, size: int = SIZE) -> list[np.ndarray]:
    """Every frame as RGB (size x size), in order."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            return [f.to_ndarray(format="rgb24", width=size, height=size) for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError) as err:
        raise VideoError(f"undecodable video: {type(err).__name__}: {err}") from None


def sample(data: bytes, train: bool, seed: int, size: int = SIZE) -> tuple[list[np.ndarray], list[int]]:
    frames = decode_rgb(data, size)
    idx = train_indices(len(frames), random.Random(seed)) if train else eval_indices(len(frames))
    return [frames[i] for i in idx], idx
