"""Which stages run, which adapters each modality goes through, and what trains at each stage,
for PathWeave and its two baselines. Stage 0 (image) trains the bridge itself; later stages:

| method              | modality m's path                                  | trains at stage t            |
|---------------------|----------------------------------------------------|------------------------------|
| pathweave           | its own adapter + the earlier modalities' frozen    | A_t, the in-adapters of path |
|                     | adapters through path m's in-adapters, gate of m   | t, gate t                    |
| sequential-finetune | one shared adapter set (image included)            | the shared set               |
| joint               | its own adapter; every modality in one stage       | every adapter                |

Parameters are chosen by exact name parts (`.experts.video.`), never by substring of a modality
name (the original's `modality in 'audio'` bug)."""
from __future__ import annotations

from dataclasses import dataclass

from fusionweave.trainers.mcl_stages import Stage


@dataclass(frozen=True)
class StagePlan:
    index: int
    label: str  # the modality, or "joint"
    modalities: tuple[str, ...]  # learned in this stage
    train: tuple[Stage, ...]  # manifest stages whose training sources this stage mixes
    steps: int

    @property
    def folder(self) -> str:
        return f"stage{self.index}-{self.label}"


def stage_plans(baseline: str, stages: list[Stage], steps: dict[str, int]) -> list[StagePlan]:
    if baseline == "joint" and len(stages) > 1:
        rest = stages[1:]
        return [StagePlan(0, stages[0].modality, (stages[0].modality,), (stages[0],), steps[stages[0].modality]),
                StagePlan(1, "joint", tuple(s.modality for s in rest), tuple(rest),
                          sum(steps[s.modality] for s in rest))]
    return [StagePlan(i, s.modality, (s.modality,), (s,), steps[s.modality]) for i, s in enumerate(stages)]


@dataclass(frozen=True)
class Routing:
    routes: dict[str, list[str]]  # path -> experts (its own last)
    paths: dict[str, str]  # modality -> path
    gated: bool


def routing(baseline: str, plans: list[StagePlan], upto: int) -> Routing:
    """The adapters in place after stage `upto` (and during it)."""
    later = [m for p in plans[1:upto + 1] for m in p.modalities]
    if baseline == "sequential-finetune":
        seen = [m for p in plans[:upto + 1] for m in p.modalities]
        return Routing({"shared": ["shared"]} if later else {}, {m: "shared" for m in seen} if later else {}, False)
    if baseline == "joint":
        return Routing({m: [m] for m in later}, {m: m for m in later}, False)
    return Routing({m: later[:i + 1] for i, m in enumerate(later)}, {m: m for m in later}, True)


def trainable_parts(baseline: str, plans: list[StagePlan], stage: int) -> tuple[str, ...] | None:
    """Name parts of the parameters that train at `stage`; None: the whole bridge (stage 0)."""
    if stage == 0:
        return None
    mods = plans[stage].modalities
    maps = tuple(f"input_maps.{m}." for m in mods)
    if baseline == "sequential-finetune":
        return (".experts.shared.", *maps)
    if baseline == "joint":
        return (*(f".experts.{m}." for m in mods), *maps)
    m = mods[0]
    return (f".experts.{m}.", f".inner.{m}__", f".gates.{m}.", *maps)
