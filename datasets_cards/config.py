"""The `card:` section of a recipe: what a card says that no build statistic can."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pretty_name: str | None = None
    summary: str | None = None
    license: str = "cc-by-4.0"
    language: list[str] = ["en"]
    task_categories: list[str] = ["image-to-text", "text-to-image"]
    tags: list[str] = ["webdataset", "fusionweave"]
    citation: str | None = None
