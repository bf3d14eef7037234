"""Which shards a pipeline reads: what the user named (`input`, or `--input`), else the one
stage of this build folder it is declared to follow. Never a fallback to an earlier stage: after
a killed `select`, `build perceive` must not quietly caption the unselected set."""
from __future__ import annotations


from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.storage.location import Loc
from fusionweave.pipelines.errors import BuildSetupError


class UpstreamError(BuildSetupError):
    pass


def input_paths(given: list[Loc] | None, out: Loc, upstream: str, reader: str) -> list[Loc]:
    """`given` as it is, or `out/upstream` when that stage is complete; otherwise a refusal
    that names the stage and how to go on."""
    if given:
        return list(given)
    folder = StageFolder(out, upstream)
    if folder.is_complete():
        return [folder.dir]
    state = "is not complete (its build was interrupted; rerun that build to finish it)" if store.exists(folder.dir) \
        else "does not exist"
    raise UpstreamError(f"{reader}: no shards found: it reads this build folder's `{upstream}` stage, which {state}; "
                        f"build `{upstream}` into {out} first, or name the shards to read with --input PATH "
                        f"(or `{reader}.input` in the recipe)")
