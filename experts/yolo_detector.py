"""Closed-set detection with ultralytics YOLO: any YOLO weights file (`.pt`) or model YAML (a
path, or a YAML ultralytics ships such as `yolov8n.yaml`, built with random weights). Class
names come from the model. Boxes out normalised to [0, 1].

YOLO-World (open vocabulary) is the second backend of the open-vocabulary detector: the same
predictor, with the tagger's tags set as its classes per image. Its head consumes text
embeddings; they come from a local transformers CLIP model (`text_model`, e.g. the tagger's own),
never from ultralytics' download of OpenAI CLIP, and each tag is embedded once per worker.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.expert import Expert, ExpertError, decoded, read_results
from fusionweave.experts.pixels import torch_device
from fusionweave.experts.tagger import hf_text_encoder, text_features
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


def world_head_width(model: str) -> int | None:
    """The text-embedding width a YOLO-World model YAML's head takes (None for a weights file,
    which is checked once loaded). A YAML without a WorldDetect head is an error."""
    resolved = resolve_yolo(model)
    if Path(resolved).suffix not in (".yaml", ".yml"):
        return None
    ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    head = [m for m in yaml_model_load(resolved).get("head", []) if m[2] == "WorldDetect"]
    if not head:
        raise ExpertError(f"perceive.ovd.model: {model!r} has no WorldDetect head: not a YOLO-World model "
                          "(e.g. yolov8s-worldv2.yaml)")
    args = head[-1][3]
    return int(args[1]) if len(args) > 1 else 512


def clip_text_width(path: Path) -> int:
    """Width of a transformers CLIP model's text embeddings, from its config (no weights read)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    if cfg.model_type != "clip":
        raise ExpertError(f"perceive.ovd.text_model: model_type {cfg.model_type!r} is not a CLIP image-text model "
                          "(its text tower embeds YOLO-World's classes)")
    return int(cfg.projection_dim)


class YoloWorldDetector(YoloDetector):
    """Open-vocabulary YOLO-World queried with each image's tags (at most `max_queries`). The
    classes are set per image by handing the head the tags' embeddings from `text_model`."""

    name = "ovd"

    def __init__(self, model: str, revision: str | None = None, resources: Resources = Resources(),
                 text_model: str = "", text_revision: str | None = None, max_queries: int = 16, **kw: Any):
        super().__init__(model, revision, resources, text_model=str(text_model), text_revision=text_revision,
                         max_queries=max_queries, **kw)

    def text_path(self) -> Path:
        from fusionweave.experts.resolve import resolve_model

        if not self.settings["text_model"]:
            raise ExpertError("perceive.ovd.text_model: backend yolo_world needs a local CLIP model to embed the tags "
                              "(e.g. the tagger's model); ultralytics' CLIP download is never used")
        return resolve_model(self.settings["text_model"], self.settings["text_revision"])

    def check(self) -> None:
        super().check()
        width, head = clip_text_width(self.text_path()), world_head_width(self.model)
        self._fits(width, head)

    def _fits(self, width: int, head: int | None) -> None:
        if head is not None and width != head:
            raise ExpertError(f"perceive.ovd.text_model: its text embeddings are {width}-d but the YOLO-World head of "
                              f"{self.model!r} takes {head}-d; use a CLIP whose projection_dim is {head}")

    def setup(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.check()
        super().setup()
        world = self._net.model
        if not hasattr(world, "txt_feats"):
            raise ExpertError(f"perceive.ovd.model: {self.model!r} is not a YOLO-World model")
        path = self.text_path()
        self._text_net = AutoModel.from_pretrained(path, local_files_only=True).to(self._device).eval()
        self._fits(clip_text_width(path), int(world.txt_feats.shape[-1]))
        self._encoder = hf_text_encoder(self._text_net, AutoTokenizer.from_pretrained(path, local_files_only=True),
                                        self._device, siglip=False)
        self._cache: dict[str, Any] = {}

    def embeddings(self, tags: list[str]) -> Any:
        """(1, n, D) unit-length embeddings of `tags`; each tag is embedded once per worker."""
        import torch

        new = [t for t in dict.fromkeys(tags) if t not in self._cache]
        if new:
            self._cache.update(zip(new, text_features(*self._encoder, new)))
        return torch.stack([self._cache[t] for t in tags])[None]

    def set_classes(self, queries: list[str]) -> None:
        """What ultralytics' set_classes does, with our embeddings and without resetting the predictor
        (which holds its own copy of the model once it has run)."""
        feats = self.embeddings(queries)
        predictor = getattr(self._net, "predictor", None)
        copies = [self._net.model] + ([predictor.model.model] if predictor is not None and predictor.model else [])
        for world in copies:
            world.txt_feats = feats.to(next(world.parameters()).dtype)
            world.model[-1].nc = len(queries)

    def predict(self, batch: Batch) -> list[Any]:
        out = []
        for img, tags in zip(decoded(batch), read_results(batch, "tagger")):
            queries = list(dict.fromkeys(t["tag"] for t in tags or []))[: self.settings["max_queries"]]
            if not queries:
                out.append([])
                continue
            self.set_classes(queries)
            r = self._predict([img])[0]
            h, w = r.orig_shape
            names = [queries[int(c)] for c in r.boxes.cls.tolist()]
            out.append(detections(normalize_xyxy(r.boxes.xyxy.cpu().numpy(), w, h), r.boxes.conf.tolist(), names,
                                  self.name))
        return out

    def teardown(self) -> None:
        super().teardown()
        self._text_net = None
        self._cache = {}
