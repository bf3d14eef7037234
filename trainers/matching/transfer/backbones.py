"""The frozen backbones UniPT and SHERL adapt: a BERT-family text encoder that yields every hidden
state (embeddings + each layer), and a CNN image encoder (transformers ResNet, or a timm ResNet
family model such as the originals' ResNeXt-101 WSL) that yields every stage's feature map.

Both run their layers one by one, so a method can run the early ones under `torch.no_grad()` and
keep the last one in the gradient path (SHERL). BatchNorm layers stay in eval mode whatever the
module's mode: their running statistics are part of the pre-trained weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from fusionweave.pipelines.config_base import Strict
from fusionweave.pipelines.errors import BuildSetupError


class BackboneError(BuildSetupError):
    """A backbone that cannot be built as configured (one line, exit 2 from the CLI)."""


class TextBackboneConfig(Strict):
    model: Path | None = Field(None, description="a local transformers BERT-family model folder (with its tokenizer)")
    max_len: int = Field(32, gt=1, le=512)


class ImageBackboneConfig(Strict):
    model: Path | None = Field(None, description="a local transformers ResNet folder (config.json + weights)")
    timm: str | None = Field(None, description="a timm ResNet-family name, e.g. resnext101_32x8d.fb_wsl_ig1b_ft_in1k")
    checkpoint: Path | None = Field(None, description="timm: a local state dict for `timm` (no download)")
    image_size: int = Field(224, ge=32, le=2048, description="images are resized to this square size")
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @model_validator(mode="after")
    def _one_source(self) -> "ImageBackboneConfig":
        if (self.model is None) == (self.timm is None):
            raise ValueError("name exactly one of image.model (a transformers ResNet folder) and image.timm")
        return self


def _require(path: Path | None, what: str) -> Path:
    if path is None:
        raise BackboneError(f"{what}.model: name a local model folder (e.g. from `fusionweave tiny-model`)")
    if not (path / "config.json").is_file():
        raise BackboneError(f"{what}.model: no config.json in {path} (a local transformers model folder is needed; "
                            "nothing is downloaded)")
    return path


def check_sources(text: TextBackboneConfig, image: ImageBackboneConfig) -> None:
    """Before any work: the model folders a run names exist (a timm model is built by name)."""
    _require(text.model, "text")
    if image.timm is None:
        _require(image.model, "image")
    elif image.checkpoint is not None and not image.checkpoint.is_file():
        raise BackboneError(f"image.checkpoint {image.checkpoint} does not exist")


class TextBackbone(nn.Module):
    """`hidden_states(ids, mask, grad_from)`: the N+1 hidden states (embeddings, layer 1..N);
    layers before `grad_from` run under no_grad (N+1: none in the gradient path)."""

    def __init__(self, cfg: TextBackboneConfig):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = _require(cfg.model, "text")
        try:
            self.model = AutoModel.from_pretrained(path, add_pooling_layer=False)  # the pooler is never read
        except TypeError:  # a model class without a pooler option: not a BERT-family encoder
            raise BackboneError(f"text.model {path}: not a BERT-family encoder") from None
        if not hasattr(self.model, "embeddings") or not hasattr(getattr(self.model, "encoder", None), "layer"):
            raise BackboneError(f"text.model {path}: {type(self.model).__name__} is not a BERT-family encoder "
                                "(needs .embeddings and .encoder.layer)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.max_len = cfg.max_len
        self.dim: int = self.model.config.hidden_size
        self.layers = self.model.encoder.layer

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        return t["input_ids"], t["attention_mask"]

    def mask(self, h: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.model.config, inputs_embeds=h, attention_mask=attention_mask)

    def layer(self, i: int, h: torch.Tensor, mask: Any) -> torch.Tensor:
        out = self.layers[i](h, attention_mask=mask)  # keyword: transformers 5 changed the positional order
        return out[0] if isinstance(out, tuple) else out

    def hidden_states(self, ids: torch.Tensor, attention_mask: torch.Tensor, upto: int | None = None,
                      grad: bool = False) -> tuple[list[torch.Tensor], Any]:
        """The embeddings and the outputs of layers 1..`upto` (default: all), with the layers' mask;
        without `grad` no graph is recorded (the frozen early route)."""
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            h = self.model.embeddings(input_ids=ids)
            mask = self.mask(h, attention_mask)
            states = [h]
            for i in range(len(self.layers) if upto is None else upto):
                h = self.layer(i, h, mask)
                states.append(h)
        return states, mask

    def save(self, out: Path) -> None:
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)


def _bn_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class ImageBackbone(nn.Module):
    """A CNN as a stem and stages of blocks. `blocks()` lists (stage, block) in order, so a
    method can split the network before its last block (SHERL's late route). Feature shapes are
    read off one dry run at `image_size`, never assumed."""

    def __init__(self, cfg: ImageBackboneConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.timm is not None:
            self.stem, stages, self.model = self._timm(cfg)
        else:
            from transformers import AutoModel

            self.model = AutoModel.from_pretrained(_require(cfg.model, "image"))
            if not hasattr(self.model, "embedder") or not hasattr(getattr(self.model, "encoder", None), "stages"):
                raise BackboneError(f"image.model {cfg.model}: {type(self.model).__name__} is not a transformers ResNet")
            self.stem = self.model.embedder
            stages = [s.layers for s in self.model.encoder.stages]
        self.stages = nn.ModuleList(stages)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            was = self.training
            self.eval()
            feats = self.stage_features(torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8))
            self.train(was)
        self.shapes: list[tuple[int, int, int]] = [tuple(f.shape[1:]) for f in feats]  # (C, H, W) per stage

    @staticmethod
    def _timm(cfg: ImageBackboneConfig) -> tuple[nn.Module, list[nn.Module], nn.Module]:
        import timm

        model = timm.create_model(cfg.timm, pretrained=False, num_classes=0)
        if cfg.checkpoint is not None:
            if not cfg.checkpoint.is_file():
                raise BackboneError(f"image.checkpoint {cfg.checkpoint} does not exist")
            state = torch.load(cfg.checkpoint, map_location="cpu")
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is not used
            model.load_state_dict(state)
        names = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4")
        if not all(hasattr(model, n) for n in names):
            raise BackboneError(f"image.timm {cfg.timm}: not a ResNet-family model (conv1 ... layer4)")
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        return stem, [model.layer1, model.layer2, model.layer3, model.layer4], model

    def train(self, mode: bool = True) -> "ImageBackbone":
        super().train(mode)
        _bn_eval(self)
        return self

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> normalised float at the configured size."""
        x = images.float() / 255.0
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def blocks(self) -> list[nn.Module]:
        return [b for s in self.stages for b in s]

    def stage_features(self, images: torch.Tensor, grad: bool = False, before_last_block: bool = False
                       ) -> list[torch.Tensor]:
        """Every stage's output; with `before_last_block` the last block is not run and its input
        (SHERL's h_{L-1}) takes the last stage's place. Without `grad` no graph is recorded."""
        last = self.blocks()[-1]
        feats = []
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            x = self.stem(self.pixels(images))
            for stage in self.stages:
                for block in stage:
                    if before_last_block and block is last:
                        break
                    x = block(x)
                feats.append(x)
        return feats

    def save(self, out: Path) -> None:
        if self.cfg.timm is not None:
            out.mkdir(parents=True, exist_ok=True)
            torch.save(self.model.state_dict(), out / "timm_state.pt")
        else:
            self.model.save_pretrained(out)


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
