"""Closed-set detection with ultralytics YOLO: any YOLO weights file (`.pt`) or model YAML (a
path, or a YAML ultralytics ships such as `yolov8n.yaml`, built with random weights). Class
names come from the model. Boxes out normalised to [0, 1].

YOLO-World (open vocabulary) is the second backend of the open-vocabulary detector: the same
predictor, with the tagger's tags set as its classes per image.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.expert import Expert, ExpertError, decoded, read_results
from fusionweave.experts.pixels import torch_device
from fusionweave.experts.ultralytics_env import ultralytics
from fusionweave.transforms.boxes import detections, normalize_xyxy


def resolve_yolo(model: str) -> str:
    """A weights file or YAML on disk, or a YAML that ultralytics ships. Never a name that
    ultralytics would go and download."""
    p = Path(model).expanduser()
    if p.is_file():
        return str(p)
    if p.suffix in (".yaml", ".yml") and len(p.parts) == 1:
        ultralytics()
        from ultralytics.utils import ROOT

        # ultralytics names a scale inside the file name: yolov8n.yaml is yolov8.yaml at scale n
        unscaled = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", p.stem) + p.suffix
        models = Path(ROOT) / "cfg" / "models"
        if any(models.rglob(p.name)) or any(models.rglob(unscaled)):
            return p.name
    raise ExpertError(f"YOLO model {model!r} not found: looked for the file {p.resolve()} and for a model YAML "
                      "shipped with ultralytics; weights are never downloaded (put the .pt file on disk)")


class YoloDetector(Expert):
    name = "detector"

    def __init__(self, model: str, revision: str | None = None, resources: Resources = Resources(),
                 confidence: float = 0.25, iou: float = 0.7, image_size: int = 640, max_det: int = 100, **kw: Any):
        super().__init__(model, revision, resources, confidence=confidence, iou=iou, image_size=image_size,
                         max_det=max_det, **kw)

    def check(self) -> None:
        ultralytics()
        resolve_yolo(self.model)

    def setup(self) -> None:
        import torch

        torch.set_num_threads(self.resources.torch_threads())
        ul = ultralytics()
        self._net = ul.YOLO(resolve_yolo(self.model))
        self._device = torch_device(self.resources.num_gpus)

    def _predict(self, images: list[Any]) -> list[Any]:
        # ultralytics reads numpy images as BGR (OpenCV order)
        return self._net.predict([im[..., ::-1] for im in images], conf=self.settings["confidence"],
                                 iou=self.settings["iou"], imgsz=self.settings["image_size"],
                                 max_det=self.settings["max_det"], device=self._device, verbose=False)

    def predict(self, batch: Batch) -> list[Any]:
        out = []
        for r in self._predict(decoded(batch)):
            h, w = r.orig_shape
            b = r.boxes
            names = [r.names[int(c)] for c in b.cls.tolist()]
            out.append(detections(normalize_xyxy(b.xyxy.cpu().numpy(), w, h), b.conf.tolist(), names, self.name))
        return out

    def teardown(self) -> None:
        self._net = None


class YoloWorldDetector(YoloDetector):
    """Open-vocabulary YOLO-World queried with each image's tags. Setting classes embeds them with
    the CLIP text model YOLO-World was trained with, which ultralytics loads from its own cache:
    offline, that file must already be there."""

    name = "ovd"

    def predict(self, batch: Batch) -> list[Any]:
        out = []
        for img, tags in zip(decoded(batch), read_results(batch, "tagger")):
            queries = [t["tag"] for t in tags or []]
            if not queries:
                out.append([])
                continue
            self._net.set_classes(queries)
            r = self._predict([img])[0]
            h, w = r.orig_shape
            names = [queries[int(c)] for c in r.boxes.cls.tolist()]
            out.append(detections(normalize_xyxy(r.boxes.xyxy.cpu().numpy(), w, h), r.boxes.conf.tolist(), names,
                                  self.name))
        return out
