"""EVE's architecture settings: what `eve_config.json` in a saved model folder holds."""
from __future__ import annotations

from pydantic import Field, model_validator

from fusionweave.pipelines.config_base import Strict
from fusionweave.trainers.chat_template import TemplateName
from fusionweave.trainers.eve.image import CLIP_MEAN, CLIP_STD


class ImageConfig(Strict):
    max_side: int = Field(672, gt=0, le=8192, description="longest side after resizing (1344 for EVE-HD)")
    patch: int = Field(14, gt=0, le=64)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @model_validator(mode="after")
    def _grid(self) -> "ImageConfig":
        if self.max_side % (2 * self.patch):
            raise ValueError(f"image.max_side {self.max_side} must be a multiple of 2 x patch ({2 * self.patch})")
        if min(self.std) <= 0:
            raise ValueError("image.std must be positive")
        return self


class PelConfig(Strict):
    width: int = Field(1024, gt=0, le=65536, description="patch embedding width C")
    heads: int = Field(8, gt=0, le=256)


class PalConfig(Strict):
    every: int = Field(4, gt=0, le=1024, description="k: align layers L, L-k, L-2k, ...")
    layers: int = Field(9, gt=0, le=1024, description="how many layers (9 every 4 for a 32-layer LLM)")
    heads: int = Field(8, gt=0, le=256)


class EveArch(Strict):
    image: ImageConfig = ImageConfig()
    pel: PelConfig = PelConfig()
    pal: PalConfig = PalConfig()
    teacher_width: int = Field(gt=0, le=65536, description="the PAL's output width (the teacher's hidden size)")
    template: TemplateName = "plain"
    add_bos: bool = True
