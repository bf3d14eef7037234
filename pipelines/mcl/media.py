"""One record's media -> its sample members, per modality, with the originals' preprocessing.
A failure raises MediaError with a reason; the caller makes it a reject."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.transforms.image_validate import ImageLimits, validate_image
from fusionweave.transforms.mcl import audio_fbank, pointcloud, video_frames
from fusionweave.transforms.mcl.record import Record

class MediaError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def seed_for(key: str, seed: int) -> int:
    """Per-record sampling seed: the same record samples the same frames and chunks every run."""
    return (int(key[:8], 16) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def valid_image(data: bytes, output_format: str, jpeg_quality: int = 95) -> tuple[bytes, str, int, int]:
    """The curate stage's checks (size and pixel caps before decoding, full decode, EXIF orientation
    applied) without its minimum size: MCL keeps every image its sources list. (bytes, ext, w, h)"""
    v = validate_image(data, ImageLimits(min_short_edge=1, output_format=output_format, jpeg_quality=jpeg_quality))
    if v.reason:
        raise MediaError(f"image_{v.reason}", v.detail or v.reason)
    return v.data, v.ext, v.width, v.height


def image_members(rec: Record, data: bytes, cfg: MclConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    out, ext, w, h = valid_image(data, "original")  # original bytes unless rotated or not RGB
    return {ext: out}, {"width": w, "height": h}


def video_members(rec: Record, data: bytes, cfg: MclConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    v = cfg.video
    try:
        c = video_frames.clip(data, rec.train, seed_for(rec.key, cfg.seed or 0), v.size, v.frames)
    except video_frames.VideoError as err:
        raise MediaError(err.reason, str(err)) from None
    members: dict[str, Any] = {f"f{i}.jpg": jpeg(f, v.jpeg_quality) for i, f in enumerate(c.frames)}
    if v.keep_source:
        members[Path(rec.media).suffix.lower().lstrip(".") or "mp4"] = data
    return members, {"frames": c.total, "seconds": round(c.seconds, 3), "frame_indices": c.indices}


def audio_members(rec: Record, data: bytes, cfg: MclConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    a = cfg.audio
    try:
        wav = audio_fbank.decode_mono_16k(data, a.min_rate)
        feats = audio_fbank.features(wav, rec.train, seed_for(rec.key, cfg.seed or 0), a.train_chunks)
    except audio_fbank.AudioError as err:
        raise MediaError(err.reason, str(err)) from None
    members: dict[str, Any] = {"fbank.npy": npy(feats)}
    if a.keep_flac:
        import soundfile as sf

        buf = io.BytesIO()
        # resampling overshoots full-scale audio; libsndfile would wrap it around, not clip it
        sf.write(buf, np.clip(wav, -1.0, 32767 / 32768), audio_fbank.RATE, format="FLAC", subtype="PCM_16")
        members["flac"] = buf.getvalue()
    return members, {"seconds": round(len(wav) / audio_fbank.RATE, 3), "chunks": int(feats.shape[0])}


def pointcloud_members(rec: Record, data: bytes, cfg: MclConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        raw = pointcloud.load_txt(data) if rec.media.endswith(".txt") else pointcloud.load_npz(data)
        pts = pointcloud.sample(raw, cfg.pointcloud.points)
    except pointcloud.PointCloudError as err:
        raise MediaError(err.reason, str(err)) from None
    return {"npy": npy(pts)}, {"points": int(len(raw)), "channels": int(raw.shape[1])}


BUILDERS = {"image": image_members, "video": video_members, "audio": audio_members,
            "pointcloud": pointcloud_members}


def preprocessing(cfg: MclConfig, modality: str, depth_model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters each modality's samples were made with, recorded with every shard."""
    if modality == "video":
        return {"decoder": "pyav", "frames": cfg.video.frames, "size": cfg.video.size, "colour": "RGB",
                "train": "2 random frames from each half, the last repeated", "eval": "evenly spaced, both ends",
                "jpeg_quality": cfg.video.jpeg_quality, "source_kept": cfg.video.keep_source}
    if modality == "audio":
        return {"rate": audio_fbank.RATE, "channels": 1, "fbank": "kaldi log-mel", "bins": audio_fbank.BINS,
                "window_ms": 25, "shift_ms": 10, "mean": audio_fbank.MEAN, "std": audio_fbank.STD,
                "normalisation": "(x - mean) / (2 * std)", "chunk_frames": audio_fbank.CHUNK,
                "train_chunks": cfg.audio.train_chunks, "eval_chunks": "all", "min_rate": cfg.audio.min_rate,
                "flac": cfg.audio.keep_flac}
    if modality == "pointcloud":
        return {"npz_key": "arr_0", "centre": "mean", "scale": "unit sphere", "sampling": "farthest point",
                "points": cfg.pointcloud.points, "start_index": 0}
    if modality == "depth":
        return {"model": depth_model or {}, "png": "uint16, 0..65535 = min..max of the predicted map",
                "larger_is_nearer": True, "rgb": "original bytes; EXIF-rotated or non-RGB images re-encoded upright as JPEG",
                "augmentation": "none at build time"}
    return {"image": "original bytes, decode checked; EXIF-rotated or non-RGB images re-encoded upright"}
