"""Typed configuration of the tracking build: which sources, in which of the originals' layouts."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from fusionweave.pipelines.config_base import Strict


class TrackingSource(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="prefix of its sequences' shard names")
    layout: Literal["lasot", "got10k", "trackingnet"]
    root: Path = Field(description="lasot: the folder of class folders; got10k: the folder of splits; "
                                   "trackingnet: the folder of TRAIN_k/TEST chunks")
    split: str | None = Field(None, description="lasot: 'training'/'testing' (reads <split>_set.txt); got10k: "
                                                "train/val/test; trackingnet: one chunk (TRAIN_0, TEST)")
    sequences: list[str] | None = Field(None, description="only these sequences (default: all)")


class TrackingConfig(Strict):
    sources: list[TrackingSource] = Field(min_length=1)
    read_cpus: float = Field(0.5, gt=0, description="CPUs per sequence task")
    min_frames: int = Field(2, ge=1, description="shorter sequences are rejects (a tracker needs a template and a "
                                                 "search frame)")

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[TrackingSource]) -> list[TrackingSource]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return v
