"""Every `fusionweave train METHOD`: its config model and its entry point, named by import path so
that the CLI imports only the method it runs. A method family adds one line here."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is not imported by the CLI until a method runs (every CLI call paid 1 s)
    from fusionweave.trainers.core.method import Method

Fit = Callable[["Method", Path], dict[str, Any]]


@dataclass(frozen=True)
class TrainEntry:
    config: str  # "module:Class", a pydantic model of the YAML config
    run: str  # "module:function", called as run(name, cfg, out, fit) -> the last metrics
    help: str

    def config_model(self) -> Any:
        return _load(self.config)

    def runner(self) -> Callable[[str, Any, Path, Fit], dict[str, Any]]:
        return _load(self.run)


def _load(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


_MATCHING = ("fusionweave.trainers.matching.train:TrainConfig", "fusionweave.trainers.matching.method:run")
METHODS: dict[str, TrainEntry] = {
    **{m: TrainEntry(*_MATCHING, f"image-text matching ({m})") for m in ("vse", "gssf", "sgr", "saf", "rcar", "dbl")},
    **{m: TrainEntry("fusionweave.trainers.matching.transfer.method:TransferConfig",
                     "fusionweave.trainers.matching.transfer.method:run", f"frozen-backbone transfer to matching ({m})")
       for m in ("unipt", "sherl", "full-finetune", "linear-probe")},
    "eve": TrainEntry("fusionweave.trainers.eve.method:EveConfig", "fusionweave.trainers.eve.train:run",
                      "EVE encoder-free VLM, three stages (patch embedding/aligning, pre-training, SFT)"),
    "dytrack": TrainEntry("fusionweave.trainers.dytrack.config:DyTrackConfig", "fusionweave.trainers.dytrack.method:run",
                          "DyTrack dynamic early-exit tracker on tracking shards (`fusionweave build tracking`)"),
    "caption-engine": TrainEntry("fusionweave.trainers.caption_engine.config:EngineConfig",
                                 "fusionweave.trainers.caption_engine.method:run",
                                 "DenseFusion's caption engine: LLaVA SFT of the pivot MLLM on teacher_sft.json"),
    "pathweave": TrainEntry("fusionweave.trainers.pathweave.config:PathWeaveConfig",
                            "fusionweave.trainers.pathweave.train:run",
                            "PathWeave continual modality learning on an MCL build (Adapter-in-Adapter + MoE gate; "
                            "method.baseline=sequential-finetune|joint for the baselines)"),
}
