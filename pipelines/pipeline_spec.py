"""A build's declared pipeline: what the CLI needs to know about it, with nothing looked up on
modules by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.storage.location import Loc


class RunPipeline(Protocol):
    def __call__(self, cfg: Any, out: Loc, engine: Any, stages: list[str] | None = None,
                 stage_engines: dict[str, Engine] | None = None, checked: Any = None) -> dict[str, dict[str, Any]]:
        ...


@dataclass(frozen=True)
class Pipeline:
    """`check` runs before any work (inputs, models, sizes) and what it returns is handed to `run`
    as `checked`, so nothing is worked out twice. `upstream`: the stage of the same build folder
    it reads unless the user names its input (`input_field`, which `--input` sets). `final`: the
    stage whose shards are the dataset. `beam_stage`: the stage `--engine beam` runs."""

    name: str
    stages: tuple[str, ...]
    run: RunPipeline
    check: Callable[[Any, Loc], Any] | None = None
    upstream: str | None = None
    input_field: str | None = None
    final: str | None = None
    beam_stage: str | None = None
    optional: Callable[[Any], list[str]] | None = None  # the stages a config turns on, when not all
    switches: dict[str, str] = field(default_factory=dict)  # optional stage -> the setting that turns it on
    # its build folder may be on an object store (every file it writes goes through the storage
    # layer; the others still keep local work folders)
    object_storage: bool = False

    def stages_for(self, cfg: Any) -> list[str]:
        return self.optional(cfg) if self.optional is not None else list(self.stages)
