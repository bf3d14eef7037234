"""Recipes: YAML files validated into typed models before any work starts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusionweave.datasets_cards.config import CardConfig
from fusionweave.pipelines.curate.config import CurateConfig
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.densefusion.config import DenseFusionConfig
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.perceive.config import PerceiveConfig
from fusionweave.pipelines.select.config import SelectConfig


class ConfigError(BuildSetupError):
    """A recipe problem; the message names the field path and what is wrong."""


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = None
    num_cpus: int | None = Field(None, gt=0)
    object_store_memory_mb: int | None = Field(None, gt=0)
    # dedup side tables up to this many rows are grouped in the driver instead of shuffled
    local_group_max_rows: int = Field(250_000, ge=0)
    # ... or up to this many bytes (wide rows such as embeddings)
    local_group_max_bytes: int = Field(2 << 30, ge=0)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    ray: RayConfig = RayConfig()
    card: CardConfig = CardConfig()
    curate: CurateConfig | None = None
    select: SelectConfig | None = None
    perceive: PerceiveConfig | None = None
    densefusion: DenseFusionConfig | None = None
    mcl: MclConfig | None = None


PIPELINE_SECTIONS = {"curate": "curate", "select": "select", "perceive": "perceive", "densefusion": "densefusion",
                     "mcl": "mcl"}


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set expects a.b=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse {raw!r}: {err}") from err
    return key.strip(), value


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {loc}: {msg} (got {e.get('input')!r})" if e["type"] != "missing" else f"  {loc}: field required")
    return "\n".join(lines)


def load_recipe(path: str | Path | None, overrides: list[str] = (), base: dict[str, Any] | None = None) -> Recipe:
    data: dict[str, Any] = dict(base or {})
    source = str(path) if path else "(defaults)"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"invalid YAML in {p}: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        data.update(loaded)
    for o in overrides:
        key, value = parse_override(o)
        set_path(data, key, value)
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def section(recipe: Recipe, pipeline: str) -> BaseModel:
    name = PIPELINE_SECTIONS.get(pipeline)
    if name is None:
        raise ConfigError(f"unknown pipeline {pipeline!r}; available: {sorted(PIPELINE_SECTIONS)}")
    cfg = getattr(recipe, name)
    if cfg is None:
        raise ConfigError(f"the config has no '{name}' section, which the {pipeline} build needs")
    return cfg
