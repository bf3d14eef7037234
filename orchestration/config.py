"""Recipes: YAML files validated into typed models before any work starts."""
from __future__ import annotations

import os

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
from fusionweave.pipelines.tracking.config import TrackingConfig
from fusionweave.pipelines.storage.location import Loc, ObjectPath


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
    # a part task running longer than this is run again (stragglers); None: no limit
    part_timeout_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    part_attempts: int = Field(2, ge=1, le=10, description="runs of a part, first included, before the stage stops")


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
    tracking: TrackingConfig | None = None


PIPELINE_SECTIONS = {"curate": "curate", "select": "select", "perceive": "perceive", "densefusion": "densefusion",
                     "mcl": "mcl", "tracking": "tracking"}


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


def with_absolute_paths(model: BaseModel) -> BaseModel:
    """The config with every path made absolute on the driver: workers do not share its working
    directory. Path fields always; a string only when it names a relative file or folder that
    exists (a model folder, a vocabulary file), so a Hugging Face id or a URL stays as written.
    A URI (`s3://bucket/key`, an ObjectPath) is kept as it is."""
    updates = {name: new for name in type(model).model_fields
               if (new := _absolute(old := getattr(model, name))) is not old}
    return model.model_copy(update=updates) if updates else model


def _absolute(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return with_absolute_paths(v)
    if isinstance(v, Path):
        return v if v.is_absolute() else Path(os.path.abspath(v))
    if isinstance(v, str):
        return os.path.abspath(v) if v and not os.path.isabs(v) and "://" not in v and os.path.exists(v) else v
    if isinstance(v, (list, tuple)):
        new = [_absolute(x) for x in v]
        return type(v)(new) if any(a is not b for a, b in zip(new, v)) else v
    if isinstance(v, dict):
        new_d = {k: _absolute(x) for k, x in v.items()}
        return new_d if any(new_d[k] is not v[k] for k in v) else v
    return v


def paths_in(model: BaseModel) -> list[Loc]:
    """The paths and URIs of a config (inputs, media roots, templates), for the preflight."""
    found: list[Loc] = []

    def walk(v: Any) -> None:
        if isinstance(v, BaseModel):
            for name in type(v).model_fields:
                walk(getattr(v, name))
        elif isinstance(v, (Path, ObjectPath)):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(model)
    return found
