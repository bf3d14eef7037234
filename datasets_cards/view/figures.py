"""Figures for the viewer, drawn on the server with matplotlib (no JavaScript chart library has to
be vendored for an offline machine): the funnel and rejects-by-reason bar charts as SVG, depth
maps, fbank spectrograms, and point clouds seen from a given azimuth as PNG."""
from __future__ import annotations

import io
from typing import Any

import numpy as np


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure  # the object API: safe in a threaded server, no pyplot state

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _save(fig: Any, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def funnel_svg(stats: dict[str, dict[str, Any]]) -> bytes:
    names = list(stats)[::-1]
    fig = _figure(7.5, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y + 0.2, [stats[n]["rows_in"] for n in names], height=0.4, label="rows in", color="#9db4d6")
    ax.barh(y - 0.2, [stats[n]["rows_out"] for n in names], height=0.4, label="rows out", color="#2b6cb0")
    ax.set_yticks(y, names)
    ax.set_xlabel("rows")
    ax.legend(loc="lower right")
    ax.set_title("rows in / out per stage")
    return _save(fig, "svg")


def rejects_svg(stage: str, by_reason: dict[str, int]) -> bytes:
    items = sorted(by_reason.items(), key=lambda kv: kv[1])[-30:]
    fig = _figure(7.5, 0.32 * max(len(items), 1) + 1.2)
    ax = fig.add_subplot()
    if items:
        ax.barh(range(len(items)), [n for _, n in items], color="#c05621")
        ax.set_yticks(range(len(items)), [r for r, _ in items])
    ax.set_xlabel("rejected rows")
    ax.set_title(f"{stage}: rejects by reason")
    return _save(fig, "svg")


def depth_png(raw: bytes) -> bytes:
    """A 16-bit depth PNG as a coloured 8-bit PNG (nearer = brighter as stored)."""
    from PIL import Image
    from matplotlib import colormaps

    arr = np.asarray(Image.open(io.BytesIO(raw))).astype(np.float64)
    if arr.ndim == 3:
        arr = arr[..., 0]
    lo, hi = float(arr.min()), float(arr.max())
    norm = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    rgb = (colormaps["magma"](norm)[..., :3] * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def load_npy(raw: bytes) -> np.ndarray:
    return np.load(io.BytesIO(raw), allow_pickle=False)  # shard members are never unpickled


def fbank_png(raw: bytes) -> bytes:
    arr = load_npy(raw)
    if arr.ndim == 3:  # chunks x frames x bins: side by side in time
        arr = np.concatenate(list(arr), axis=0)
    fig = _figure(7.5, 2.6)
    ax = fig.add_subplot()
    im = ax.imshow(np.asarray(arr, dtype=np.float32).T, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xlabel("frame")
    ax.set_ylabel("mel bin")
    ax.set_title("fbank spectrogram")
    fig.colorbar(im, ax=ax)
    return _save(fig, "png")


AZIMUTHS = tuple(range(0, 360, 45))


def points_png(raw: bytes, azim: int) -> bytes:
    arr = np.asarray(load_npy(raw), dtype=np.float32)
    xyz = arr[:, :3] if arr.ndim == 2 and arr.shape[1] >= 3 else np.zeros((0, 3), np.float32)
    colour = arr[:, 3:6] if arr.ndim == 2 and arr.shape[1] >= 6 else None
    if colour is not None and (colour.min() < 0 or colour.max() > 1):
        colour = None
    if len(xyz) > 4096:
        xyz = xyz[:: len(xyz) // 4096 + 1]
        colour = colour[:: len(colour) // 4096 + 1] if colour is not None else None
    fig = _figure(4.2, 4.2)
    ax = fig.add_subplot(projection="3d")
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], s=2, c=colour if colour is not None else xyz[:, 2], cmap=None if colour is not None else "viridis")
    ax.view_init(elev=20, azim=azim)
    ax.set_title(f"point cloud, azimuth {azim}°")
    return _save(fig, "png")


def thumbnail(raw: bytes, size: int = 192) -> bytes | None:
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(raw))
        img.draft("RGB", (size * 2, size * 2))
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((size, size))
    except Exception:  # noqa: BLE001 - not an image we can decode: no thumbnail
        return None
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()
