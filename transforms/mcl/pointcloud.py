"""Point clouds as MCL's point-cloud modality reads them: `arr_0` of `<sample_id>_8192.npz`,
centred, scaled to the unit sphere, farthest-point sampled to 8,192 points from a fixed start."""
from __future__ import annotations

import io

import numpy as np

POINTS = 8192


class PointCloudError(ValueError):
    def __init__(self, message: str, reason: str = "points_unreadable"):
        super().__init__(message)
        self.reason = reason


def load_npz(data: bytes, key: str = "arr_0") -> np.ndarray:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise PointCloudError(f"not an npz archive (a {type(z).__name__})")
            if key not in z:
                raise PointCloudError(f"npz has no {key!r} (keys: {sorted(z.files)})")
            pts = np.asarray(z[key])
    except PointCloudError:
        raise
    except Exception as err:  # noqa: BLE001 - zip, zlib, format errors: this file's reject
        raise PointCloudError(f"unreadable npz: {type(err).__name__}: {err}") from None
    return check(pts)


def load_txt(data: bytes) -> np.ndarray:
    """ModelNet40's `x,y,z,nx,ny,nz` text files."""
    try:
        pts = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as err:
        raise PointCloudError(f"unreadable point text: {err}") from None
    return check(pts)


def check(pts: np.ndarray) -> np.ndarray:
    if pts.ndim != 2 or pts.shape[1] < 3 or len(pts) == 0:
        raise PointCloudError(f"points must be (N, >=3), got {pts.shape}", "points_bad_shape")
    if not np.issubdtype(pts.dtype, np.number):
        raise PointCloudError(f"points must be numbers, got {pts.dtype}", "points_bad_shape")
    if not np.isfinite(pts).all():
        raise PointCloudError(f"{int((~np.isfinite(pts)).any(axis=1).sum())} points are NaN or infinite",
                              "points_nonfinite")
    return pts


def unit_sphere(points: np.ndarray) -> np.ndarray:
    """xyz centred on their mean and scaled so the farthest point is at distance 1; other
    channels (colours) untouched."""
    out = points.astype(np.float32, copy=True)
    xyz = out[:, :3] - out[:, :3].mean(axis=0)
    radius = float(np.sqrt((xyz ** 2).sum(axis=1)).max())
    out[:, :3] = xyz / radius if radius > 0 else xyz
    return out


def farthest_point_sample(points: np.ndarray, n: int = POINTS, start: int = 0) -> np.ndarray:
    """Indices of n points, each the farthest from those already chosen (xyz), beginning at
    `start`: deterministic. One distance update over all points per pick, on contiguous x, y, z
    columns with preallocated buffers (an (N, 3) row-wise sum per pick is ~17x slower)."""
    total = len(points)
    if total <= n:  # fewer points than asked: all of them, then repeats from the start
        return np.resize(np.arange(total), n)
    x, y, z = (np.ascontiguousarray(points[:, i], dtype=np.float32) for i in range(3))
    chosen = np.empty(n, np.int64)
    dist = np.full(total, np.inf, np.float32)
    d, t = np.empty(total, np.float32), np.empty(total, np.float32)
    cur = start
    for i in range(n):
        chosen[i] = cur
        np.subtract(x, x[cur], out=d)
        np.multiply(d, d, out=d)
        for col in (y, z):
            np.subtract(col, col[cur], out=t)
            np.multiply(t, t, out=t)
            np.add(d, t, out=d)
        np.minimum(dist, d, out=dist)
        cur = int(dist.argmax())
    return chosen


def prepare(data: bytes, n: int = POINTS, text: bool = False) -> np.ndarray:
    return sample(load_txt(data) if text else load_npz(data), n)


def sample(points: np.ndarray, n: int = POINTS) -> np.ndarray:
    pts = unit_sphere(points)
    return pts[farthest_point_sample(pts, n)]
