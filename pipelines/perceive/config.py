"""Typed configuration of the perceive pipeline (DenseFusion's perception experts).

Each expert has `enabled`, a model (a local folder or a Hugging Face id in the local cache; for
YOLO a .pt/.yaml file or a YAML ultralytics ships; for OCR the backend) and the resources its
worker pool declares. `trust_remote_code` stays off unless turned on.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fusionweave.experts.expert import EXPERTS
from fusionweave.pipelines.config_base import Strict, WithPlugins, WorkerConfig
from fusionweave.pipelines.storage.location import StoragePath


class ExpertConfig(WorkerConfig):
    enabled: bool = True
    model: str = ""
    revision: str | None = None

    @model_validator(mode="after")
    def _model_named(self) -> "ExpertConfig":
        if self.enabled and not self.model:
            raise ValueError("model is required when the expert is enabled (a local folder or a cached Hugging Face id)")
        return self


class TaggerConfig(ExpertConfig):
    backend: Literal["transformers", "open_clip"] = "transformers"
    pretrained: str = Field("", description="open_clip only: a local checkpoint file; empty: random weights")
    vocabulary: str = Field("coco+lvis", description="coco, lvis, coco+lvis, or a file with one tag per line")
    prompt: str = "a photo of a {}."
    threshold: float = Field(0.1, ge=0, le=1)
    top_k: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _pretrained_is_open_clip(self) -> "TaggerConfig":
        if self.pretrained and self.backend != "open_clip":
            raise ValueError("pretrained is for backend: open_clip (a transformers model names its folder in model)")
        return self


class DetectorConfig(ExpertConfig):
    model: str = "yolov8n.pt"
    confidence: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.7, gt=0, le=1)
    image_size: int = Field(640, gt=0)
    max_det: int = Field(100, gt=0)


class OvdConfig(ExpertConfig):
    backend: Literal["owl", "yolo_world"] = "owl"
    confidence: float = Field(0.1, ge=0, le=1)
    max_queries: int = Field(16, gt=0, description="tags per image used as queries")
    image_size: int = Field(640, gt=0, description="yolo_world only")
    text_model: str = Field("", description="yolo_world only: a local transformers CLIP (folder or cached id) whose "
                                            "text embeddings (projection_dim = the head's width) name the classes")
    text_revision: str | None = None

    @model_validator(mode="after")
    def _text_model_for_yolo_world(self) -> "OvdConfig":
        if self.enabled and self.backend == "yolo_world" and not self.text_model:
            raise ValueError("text_model is required for backend yolo_world: a local CLIP model whose text tower "
                             "embeds the tags (e.g. the tagger's model); nothing is downloaded")
        if self.text_model and self.backend != "yolo_world":
            raise ValueError("text_model is for backend yolo_world (OWL embeds its queries itself)")
        return self


class BoxesConfig(Strict):
    min_score: float = Field(0.1, ge=0, le=1, description="confidence floor after merging")
    nms_iou: float = Field(0.5, gt=0, le=1, description="class-aware NMS across detectors")
    max_boxes: int = Field(20, gt=0)
    small_area: float = Field(0.01, gt=0, le=1, description="normalised box area below which an object is small")
    small_quota: float = Field(0.25, ge=0, le=1, description="share of max_boxes kept for small objects")


class OcrConfig(ExpertConfig):
    model: Literal["rapidocr", "paddleocr"] = "rapidocr"
    min_confidence: float = Field(0.5, ge=0, le=1)
    det_model_dir: str | None = Field(None, description="paddleocr: a PaddleOCR detection model folder")
    rec_model_dir: str | None = Field(None, description="paddleocr: a PaddleOCR recognition model folder")
    enable_mkldnn: bool = Field(False, description="paddleocr: oneDNN on CPU (fails on some CPUs)")


class DepthConfig(ExpertConfig):
    pass


class PerceiveConfig(WithPlugins):
    input: list[StoragePath] | None = Field(None, description="stage folders, folders of shards or shard files; "
                                                       "default: this build folder's `select` stage, which must be complete")
    read_cpus: float = Field(0.5, gt=0, description="per read / decode / preprocess task")
    chunk_size: int = Field(8, gt=0, description="images per reader chunk")
    trust_remote_code: bool = False
    tagger: TaggerConfig = TaggerConfig(enabled=False)
    detector: DetectorConfig = DetectorConfig(enabled=False)
    ovd: OvdConfig = OvdConfig(enabled=False)
    boxes: BoxesConfig = BoxesConfig()
    ocr: OcrConfig = OcrConfig()
    depth: DepthConfig = DepthConfig(enabled=False)

    @classmethod
    def plugin_types(cls) -> dict[str, Any]:
        """Blocks that experts declare themselves (experts.expert.Expert.block)."""
        return {name: e.config for name, e in EXPERTS.items()}

    @model_validator(mode="after")
    def _ovd_needs_tags(self) -> "PerceiveConfig":
        if self.ovd.enabled and not self.tagger.enabled:
            raise ValueError("ovd.enabled needs tagger.enabled: the open-vocabulary detector is queried with the tags")
        if not any(e.enabled for e in (self.tagger, self.detector, self.ovd, self.ocr, self.depth,
                                       *self.plugins.values())):
            raise ValueError("no expert is enabled")
        return self
