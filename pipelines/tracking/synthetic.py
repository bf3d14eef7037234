"""Small synthetic tracking sequences for CPU runs, written in the originals' layouts.

Each sequence: a smooth random-texture background, one target with its own texture moving on
a smooth path with scale drift, and (hard sequences) look-alike distractors,
faster motion and full occlusions (a background patch over the target; its frames are flagged
in full_occlusion.txt, so they are invisible under LaSOT's rules). Classes are `easy` and
`hard`: hard sequences have look-alike distractors (the target's pattern
in other colours), so a tracker should be less sure on them.
`plant_bad` adds LaSOT sequences that the build must refuse, one per reason."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PLANTED = {"bad-1": "missing_frame", "bad-2": "box_outside_image", "bad-3": "invalid_box",
           "bad-4": "invalid_box", "bad-5": "length_mismatch"}


@dataclass
class Sequence:
    frames: list[np.ndarray]  # H x W x 3 uint8
    boxes: np.ndarray  # (n, 4) x, y, w, h
    occluded: np.ndarray  # (n,) 0/1
    out_of_view: np.ndarray  # (n,) 0/1


def texture(rng: np.random.Generator, h: int, w: int, smooth: int) -> np.ndarray:
    """A colour texture: random noise upsampled from a (h/smooth, w/smooth) grid."""
    small = rng.integers(0, 256, size=(max(1, h // smooth), max(1, w // smooth), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def paste(frame: np.ndarray, patch: np.ndarray, x: float, y: float, w: float, h: float) -> None:
    """The patch resized to (w, h) at (x, y), clipped to the frame."""
    H, W = frame.shape[:2]
    wi, hi = max(1, int(round(w))), max(1, int(round(h)))
    xi, yi = int(round(x)), int(round(y))
    img = np.asarray(Image.fromarray(patch).resize((wi, hi), Image.BILINEAR))
    x0, y0, x1, y1 = max(0, xi), max(0, yi), min(W, xi + wi), min(H, yi + hi)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = img[y0 - yi:y1 - yi, x0 - xi:x1 - xi]


def path(rng: np.random.Generator, n: int, size: int, w0: float, speed: float) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners bouncing inside the frame, and sizes drifting by up to 2% a frame."""
    pos = np.zeros((n, 2))
    sizes = np.zeros(n)
    p = rng.uniform(0.1 * size, 0.9 * size - w0, 2)
    v = rng.normal(0, 1, 2)
    v = v / (np.linalg.norm(v) + 1e-9) * speed
    s, ds = w0, rng.uniform(-0.02, 0.02)
    for i in range(n):
        pos[i], sizes[i] = p, s
        v = v + rng.normal(0, speed * 0.15, 2)
        v = v / (np.linalg.norm(v) + 1e-9) * speed
        p = p + v
        s = float(np.clip(s * (1 + ds), 0.12 * size, 0.35 * size))
        for k in range(2):
            if p[k] < 0 or p[k] + s > size:
                v[k] = -v[k]
                p[k] = float(np.clip(p[k], 0, size - s))
    return pos, sizes


def make_sequence(rng: np.random.Generator, n: int, size: int, hard: bool) -> Sequence:
    bg = texture(rng, size, size, 16)
    target = texture(rng, 24, 24, 4)
    w0 = rng.uniform(0.16, 0.25) * size
    aspect = rng.uniform(0.7, 1.4)
    pos, sizes = path(rng, n, size, w0, speed=(0.05 if hard else 0.02) * size)
    # hard: look-alike distractors (the target's pattern in other colours: its channels rotated)
    distractors = [(np.roll(target, j + 1, axis=2).copy(), *path(rng, n, size, w0, 0.05 * size))
                   for j in range(2 if hard else 0)]
    occluded = np.zeros(n, dtype=np.int64)
    if hard and n >= 12:
        start = int(rng.integers(n // 3, n - 4))
        occluded[start:start + 2] = 1
    frames, boxes = [], []
    for i in range(n):
        f = bg.copy()
        for tex, dpos, dsz in distractors:
            paste(f, tex, dpos[i][0], dpos[i][1], dsz[i], dsz[i])
        w, h = sizes[i], min(sizes[i] * aspect, 0.4 * size)
        x, y = pos[i][0], min(pos[i][1], size - h)
        paste(f, target, x, y, w, h)
        if occluded[i]:  # the background over the target: nothing of it shows
            f[int(y) - 1:int(y + h) + 2, int(x) - 1:int(x + w) + 2] = bg[int(y) - 1:int(y + h) + 2,
                                                                          int(x) - 1:int(x + w) + 2]
        frames.append(f)
        boxes.append([round(x, 2), round(y, 2), round(w, 2), round(h, 2)])
    return Sequence(frames, np.array(boxes), occluded, np.zeros(n, dtype=np.int64))


def jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_boxes(path: Path, boxes: np.ndarray) -> None:
    path.write_text("".join(",".join(f"{v:g}" for v in b) + "\n" for b in boxes))


def write_lasot(seq_dir: Path, s: Sequence) -> None:
    (seq_dir / "img").mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(s.frames, 1):
        (seq_dir / "img" / f"{i:08d}.jpg").write_bytes(jpeg(f))
    write_boxes(seq_dir / "groundtruth.txt", s.boxes)
    (seq_dir / "full_occlusion.txt").write_text(",".join(str(int(v)) for v in s.occluded) + "\n")
    (seq_dir / "out_of_view.txt").write_text(",".join(str(int(v)) for v in s.out_of_view) + "\n")


def write_got10k(seq_dir: Path, s: Sequence) -> None:
    seq_dir.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(s.frames, 1):
        (seq_dir / f"{i:08d}.jpg").write_bytes(jpeg(f))
    write_boxes(seq_dir / "groundtruth.txt", s.boxes)
    (seq_dir / "absence.label").write_text("".join(f"{int(v)}\n" for v in s.occluded))
    (seq_dir / "cover.label").write_text("".join(f"{0 if v else 8}\n" for v in s.occluded))
    (seq_dir / "cut_by_image.label").write_text("".join("0\n" for _ in s.occluded))
    (seq_dir / "meta_info.ini").write_text(f"[METAINFO]\nobject_class: synthetic\nresolution: "
                                           f"({s.frames[0].shape[1]}, {s.frames[0].shape[0]})\n")


def write_trackingnet(chunk: Path, name: str, s: Sequence) -> None:
    (chunk / "frames" / name).mkdir(parents=True, exist_ok=True)
    (chunk / "anno").mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(s.frames):
        (chunk / "frames" / name / f"{i}.jpg").write_bytes(jpeg(f))
    write_boxes(chunk / "anno" / f"{name}.txt", s.boxes)


def plant_bad(root: Path, rng: np.random.Generator, n: int, size: int) -> None:
    """One LaSOT sequence per refusal reason, under the class `bad`."""
    for name, reason in PLANTED.items():
        s = make_sequence(rng, n, size, hard=False)
        d = root / "bad" / name
        write_lasot(d, s)
        if name == "bad-1":
            (d / "img" / f"{n // 2:08d}.jpg").unlink()
        elif name == "bad-2":
            s.boxes[3] = [size + 10, 5, 10, 10]
        elif name == "bad-3":
            s.boxes[2, 2] = np.nan
        elif name == "bad-4":
            s.boxes[4, 3] = -5
        elif name == "bad-5":
            (d / "img" / f"{n:08d}.jpg").unlink()  # the last frame: the count is off, no gap
        write_boxes(d / "groundtruth.txt", s.boxes)


def generate(out: Path, layout: str = "lasot", easy: int = 4, hard: int = 4, frames: int = 30, size: int = 128,
             seed: int = 0, bad: bool = False) -> dict[str, list[str]]:
    """Write `easy` + `hard` sequences; returns class -> sequence names (and `bad` when planted)."""
    rng = np.random.default_rng(seed)
    names: dict[str, list[str]] = {"easy": [], "hard": []}
    for cls, count in (("easy", easy), ("hard", hard)):
        for k in range(1, count + 1):
            s = make_sequence(rng, frames, size, hard=cls == "hard")
            name = f"{cls}-{k}"
            if layout == "lasot":
                write_lasot(out / cls / name, s)
            elif layout == "got10k":
                write_got10k(out / "train" / name, s)
            else:
                write_trackingnet(out / "TRAIN_0", name, s)
            names[cls].append(name)
    if layout == "got10k":
        (out / "train" / "list.txt").write_text("".join(n + "\n" for v in names.values() for n in v))
    if bad:
        if layout != "lasot":
            raise ValueError("bad sequences are planted in the LaSOT layout")
        plant_bad(out, rng, frames, size)
        names["bad"] = list(PLANTED)
    return names
