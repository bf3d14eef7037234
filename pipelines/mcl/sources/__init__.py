"""Every source format MCL reads, by name (the `format` of a configured source)."""
from __future__ import annotations

from typing import Any

from fusionweave.pipelines.mcl.sources import audio, depth, image, pointcloud, video
from fusionweave.pipelines.mcl.sources.spec import Spec, build_records
from fusionweave.transforms.mcl.record import Record

SPECS: dict[str, Spec] = {**image.SPECS, **video.SPECS, **audio.SPECS, **depth.SPECS, **pointcloud.SPECS}


def read_source(src: Any) -> tuple[list[Record], list[dict[str, Any]]]:
    return build_records(src, SPECS[src.format])
