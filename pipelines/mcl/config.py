"""Typed configuration of the mcl build (PathWeave's Continual Learning of Modality benchmark).
Preprocessing defaults are the originals' (../shared/REFERENCE.md); changing them is recorded."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fusionweave.pipelines.config_base import Strict, WorkerConfig
from fusionweave.transforms.mcl.record import MODALITIES

Format = Literal["coco_caption", "vqa", "gqa", "msrvtt_caption", "video_qa", "audiocaps", "audiocaps_qa",
                 "audioset", "wavcaps", "clotho", "clotho_aqa", "cc3m", "llava_instruct", "scene_labels",
                 "cap3d", "cap3d_qa", "modelnet40"]


class SourceConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="unique; stage mixtures refer to it")
    format: Format
    split: Literal["train", "val", "test"]
    domain: Literal["in", "out"] = Field("in", description="out: an out-of-domain eval set, kept in <split>_ood")
    annotations: Path = Field(description="the annotation file in the original's own format")
    questions: Path | None = Field(None, description="vqa: the questions file (annotations holds the answers)")
    media_root: Path
    media_pattern: str | None = Field(None, description="media path from a row's fields, e.g. '{youtube_id}.wav'; "
                                                        "default: the format's")
    answer_map: Path | None = Field(None, description="video_qa: answer -> label JSON (e.g. train_ans2label.json)")
    labels: Path | None = Field(None, description="audioset: class_labels_indices.csv; modelnet40: shape names "
                                                  "file; scene_labels: one class per line")
    classes: list[str] | None = Field(None, description="scene_labels: the class names, instead of a labels file")

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.format == "vqa" and self.questions is None:
            raise ValueError("the vqa format needs `questions` (the questions JSON) besides `annotations`")
        if self.format in ("audioset", "modelnet40") and self.labels is None:
            raise ValueError(f"the {self.format} format needs `labels` (its class names file)")
        if self.format == "scene_labels" and self.labels is None and not self.classes:
            raise ValueError("the scene_labels format needs `classes` or a `labels` file")
        return self


class VideoConfig(Strict):
    frames: int = Field(5, gt=0)
    size: int = Field(224, gt=0)
    jpeg_quality: int = Field(95, ge=1, le=100)
    keep_source: bool = Field(False, description="also store the source video in the sample")


class AudioConfig(Strict):
    train_chunks: int = Field(2, gt=0, description="512-frame fbank chunks kept for training (eval: all)")
    min_rate: int = Field(16_000, gt=0, description="clips recorded below this rate are rejected, not upsampled")
    keep_flac: bool = Field(True, description="store the mono 16 kHz audio as FLAC beside the fbank")


class DepthConfig(WorkerConfig):
    model: str = Field("", description="a transformers depth estimator (local folder or cached HF id)")
    revision: str | None = None
    jpeg_quality: int = Field(95, ge=1, le=100)


class PointCloudConfig(Strict):
    points: int = Field(8192, gt=0)


class StageConfig(Strict):
    modality: Literal["image", "video", "audio", "depth", "pointcloud"]
    mixture: dict[str, float] | None = Field(None, description="train source -> sampling ratio; default: by size")


DEFAULT_STAGES = [StageConfig(modality=m) for m in MODALITIES]


class MclConfig(Strict):
    seed: int | None = None
    shard_size: int = Field(256, gt=0)
    read_cpus: float = Field(0.5, gt=0)
    duplicates: Literal["content", "path"] = Field(
        "content", description="what makes two media files one item when checking train/eval overlap: "
                               "their sha256 (copies under other names are caught) or their real path")
    follow_symlinks_outside_root: bool = Field(False, description="media reached through a symlink that leaves "
                                                                   "its media root is a reject unless this is on")
    trust_remote_code: bool = False
    sources: list[SourceConfig] = Field(min_length=1)
    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    depth: DepthConfig = DepthConfig()
    pointcloud: PointCloudConfig = PointCloudConfig()
    stages: list[StageConfig] = Field(default_factory=lambda: list(DEFAULT_STAGES),
                                      description="continual order: image -> video -> audio -> depth -> pointcloud")

    @model_validator(mode="after")
    def _consistent(self) -> "MclConfig":
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique, repeated: {dup}")
        order = [s.modality for s in self.stages]
        if order != sorted(order, key=MODALITIES.index) or len(set(order)) != len(order):
            raise ValueError(f"stages must follow image -> video -> audio -> depth -> pointcloud once each, got {order}")
        return self
