"""A perception expert: a model step that adds one JSON column per row and never drops a row.

Batches carry `key`, `image` (encoded bytes), `width`, `height`. An expert writes `x_<name>`:
{"results": ..., "error": str | None, "seconds": float}. If its batched call raises, the rows
are retried one by one, so one bad image costs only its own result: the error is recorded on
that row and every other row keeps its result. Model id, revision and settings are recorded once
per expert (`info()`) and joined into `experts.json` when the shard is written.

CPU work around the model (decode, resize) runs in `prepare` (and `postprocess`) on CPU
workers; `prepare` marks rows it could not prepare in `_err_<name>`, which skip the model.
"""
from __future__ import annotations

import json
import time
from typing import Any, ClassVar, Collection

import numpy as np

from fusionweave.experts.base import Batch, ModelStep, Resources
from fusionweave.experts.pixels import ImagePreprocessor, Normalizer, decode_rgb, error_text, torch_device
from fusionweave.experts.resolve import resolve_model


class ExpertError(RuntimeError):
    """A configuration or model problem that makes the whole expert unusable (before work)."""


def result_column(name: str) -> str:
    return f"x_{name}"


def error_column(name: str) -> str:
    return f"_err_{name}"


def prepare_errors(errors: list[str | None]) -> np.ndarray:
    """Per-row errors of a prepare step as strings, "" for none: an all-None object column would
    cross the engine (Arrow) as nulls and come back as float NaN."""
    return np.array([e or "" for e in errors], dtype=object)


def take(batch: Batch, rows: np.ndarray) -> Batch:
    return {k: v[rows] for k, v in batch.items()}


def cell(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def read_results(batch: Batch, name: str) -> list[Any]:
    """Another expert's results per row (None where it failed or is absent)."""
    col = batch.get(result_column(name))
    if col is None:
        return [None] * len(batch["key"])
    return [json.loads(c)["results"] if c is not None else None for c in col]


def cells(results: list[Any], errors: list[str | None], seconds: float) -> np.ndarray:
    return np.array([cell({"results": r if e is None else None, "error": e, "seconds": round(seconds if e is None else 0.0, 5)})
                     for r, e in zip(results, errors)], dtype=object)


EXPERTS: dict[str, type["Expert"]] = {}  # config block -> the expert it configures (plug-ins)


class Expert(ModelStep):
    """An expert of the perceive chain. A plug-in expert also names its config `block` and that
    block's pydantic model (`config`, with `enabled` and the worker resources): subclassing
    registers it, so `perceive.<block>: {...}` in a recipe adds `from_config(block)` to the chain."""

    name = "expert"
    model: str = ""
    revision: str | None = None
    block: ClassVar[str] = ""
    config: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.block:
            EXPERTS[cls.block] = cls

    @classmethod
    def from_config(cls, cfg: Any, trust_remote_code: bool) -> "Expert":
        """The expert its config block describes (plug-ins implement this)."""
        raise NotImplementedError(f"{cls.__name__} declares block {cls.block!r} but no from_config")

    def __init__(self, model: str = "", revision: str | None = None, resources: Resources = Resources(),
                 trust_remote_code: bool = False, **settings: Any):
        self.model = model
        self.revision = revision
        self.resources = resources
        self.trust_remote_code = trust_remote_code
        self.settings = settings

    # --- what an expert implements -------------------------------------------------------
    def predict(self, batch: Batch) -> list[Any]:  # pragma: no cover - abstract
        """Results for every row of `batch` (JSON-able), in order. May raise."""
        raise NotImplementedError

    def prepare(self, batch: Batch) -> Batch:
        """CPU work before the model; the default decodes nothing (the model step does)."""
        return batch

    has_prepare = False
    has_postprocess = False

    def postprocess(self, batch: Batch) -> Batch:
        return batch

    # --- the contract ----------------------------------------------------------------------
    def model_path(self) -> Any:
        return resolve_model(self.model, self.revision)

    def run_isolated(self, batch: Batch) -> tuple[list[Any], list[str | None], float]:
        """predict() on the rows `prepare` did not mark, retried row by row if the batch fails:
        results and errors per row, and seconds per predicted row."""
        n = len(batch["key"])
        prep = batch.pop(error_column(self.name), None)
        errors: list[str | None] = [e if isinstance(e, str) and e else None for e in prep] if prep is not None \
            else [None] * n
        results: list[Any] = [None] * n
        rows = np.flatnonzero([e is None for e in errors])
        t0 = time.perf_counter()
        if len(rows):
            try:
                got = self.predict(take(batch, rows))
                if len(got) != len(rows):
                    raise RuntimeError(f"{self.name} returned {len(got)} results for {len(rows)} images")
                for i, r in zip(rows, got):
                    results[i] = r
            except Exception:  # noqa: BLE001 - isolate: retry row by row
                for i in rows:
                    try:
                        results[i] = self.predict(take(batch, np.array([i])))[0]
                    except Exception as err:  # noqa: BLE001 - recorded on the row
                        errors[i] = error_text(err)
        return results, errors, (time.perf_counter() - t0) / max(1, len(rows))

    def process(self, batch: Batch) -> Batch:
        results, errors, per_row = self.run_isolated(batch)
        batch[result_column(self.name)] = cells(results, errors, per_row)
        return batch

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "model": str(self.model), "revision": self.revision,
                "settings": dict(sorted(self.settings.items()))}


def decoded(batch: Batch) -> list[Any]:
    """The batch's images as RGB numpy arrays (raises on an undecodable one: the caller isolates)."""
    return [np.asarray(decode_rgb(b)) for b in batch["image"]]


class PixelExpert(Expert):
    """An expert whose model takes its image processor's pixels: `prepare` decodes and resizes on
    CPU workers (uint8, 4x smaller than float); the model step normalises next to the model."""

    has_prepare = True
    pixels = "_px"
    supported: Collection[str] = ()  # transformers model_types this expert loads
    config_field = ""  # where the model is named in the config, for messages

    def model_type(self) -> str:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.model_path(), local_files_only=True,
                                          trust_remote_code=self.trust_remote_code).model_type

    def check(self) -> None:
        mt = self.model_type()
        if mt not in self.supported:
            raise ExpertError(f"{self.config_field}: model_type {mt!r} is not {self.kind}; supported: "
                              f"{sorted(self.supported)}")

    kind = "a model this expert runs"

    def preprocessor(self) -> Any:
        if getattr(self, "_pre", None) is None:
            self._pre = ImagePreprocessor(self.model, self.revision, keep_failed=True)
        return self._pre

    def load(self, auto_class: Any) -> Any:
        """Check, then load the model with `auto_class` onto this worker's device, and the
        normaliser for its pixels."""
        import torch
        from transformers import AutoImageProcessor

        torch.set_num_threads(self.resources.torch_threads())
        self.check()
        path = self.model_path()
        self._device = torch_device(self.resources.num_gpus)
        self._norm = Normalizer(AutoImageProcessor.from_pretrained(path, local_files_only=True), self._device)
        return auto_class.from_pretrained(path, local_files_only=True,
                                          trust_remote_code=self.trust_remote_code).to(self._device).eval()

    def prepare(self, batch: Batch) -> Batch:
        px, errors = self.preprocessor()(list(batch["image"]))
        batch[self.pixels] = px
        batch[error_column(self.name)] = prepare_errors(errors)
        return batch

    def process(self, batch: Batch) -> Batch:
        batch = super().process(batch)
        batch.pop(self.pixels, None)
        return batch
