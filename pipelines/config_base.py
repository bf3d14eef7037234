"""Config building blocks shared by the pipelines."""
from __future__ import annotations

from typing import Any

from pydantic import (BaseModel, ConfigDict, Field, SerializationInfo, TypeAdapter, ValidationError, field_validator,
                      model_serializer, model_validator)

from fusionweave.experts.base import Resources


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerConfig(Strict):
    """What a model step's worker pool declares to the engine."""

    batch_size: int = Field(8, gt=0)
    num_cpus: float = Field(0.5, gt=0, description="per model worker (fractional: whole CPUs can starve reads)")
    num_gpus: float = Field(0.0, ge=0)
    concurrency: int = Field(1, gt=0, description="model workers in the pool")
    threads: int | None = Field(None, gt=0, description="intra-op threads per worker")

    def resources(self) -> Resources:
        return Resources(num_cpus=self.num_cpus, num_gpus=self.num_gpus, batch_size=self.batch_size,
                         concurrency=self.concurrency, threads=self.threads)


class WithPlugins(Strict):
    """A config section that plug-ins extend with fields of their own (a filter's threshold, an
    expert's block). `plugin_types()` maps each declared field to the type its value is
    validated as; in a recipe and in build.json the fields sit beside the built-in ones. Any
    other unknown field is still an error."""

    plugins: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @classmethod
    def plugin_types(cls) -> dict[str, Any]:  # pragma: no cover - each section names its registry
        return {}

    @model_validator(mode="before")
    @classmethod
    def _gather_plugins(cls, data: Any) -> Any:
        if isinstance(data, dict):
            declared = cls.plugin_types()
            found = {k: v for k, v in data.items() if k in declared and k not in cls.model_fields}
            if found:
                data = {**{k: v for k, v in data.items() if k not in found},
                        "plugins": {**data.get("plugins", {}), **found}}
        return data

    @field_validator("plugins")
    @classmethod
    def _validate_plugins(cls, v: dict[str, Any]) -> dict[str, Any]:
        declared, out = cls.plugin_types(), {}
        for name, value in v.items():
            if name not in declared:
                raise ValueError(f"{name}: no plug-in declares this field")
            try:
                out[name] = TypeAdapter(declared[name]).validate_python(value)
            except ValidationError as err:
                e = err.errors()[0]
                where = ".".join(map(str, (name, *e["loc"])))
                raise ValueError(f"{where}: {e['msg']} (got {value!r})") from None
        return out

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        declared = self.plugin_types()
        return {**handler(self), **{k: TypeAdapter(declared[k]).dump_python(v, mode=info.mode)
                                    for k, v in self.plugins.items()}}
