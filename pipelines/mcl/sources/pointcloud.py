"""Point-cloud sources: Cap3D captions (`sample_id, caption`; the released CSV has no header),
Cap3D-QA (`sample_id, question, answer`) and ModelNet40 (a list of names such as `airplane_0627`
with `modelnet40_shape_names.txt`); points from `<name>_8192.npz`."""
from __future__ import annotations

from typing import Any, Iterator

from fusionweave.pipelines.mcl.sources.audio import csv_export
from fusionweave.pipelines.mcl.sources.depth import scene_classes
from fusionweave.pipelines.mcl.sources.spec import Spec
from fusionweave.pipelines.mcl.sources.tables import Bad, Row, csv_rows, read_text

CAP3D = ("sample_id", "caption")
CAP3D_QA = ("sample_id", "question", "answer")


def headerless(columns: tuple[str, ...]) -> Any:
    def rows(src: Any) -> Iterator[Row | Bad]:
        yield from csv_rows(src.annotations, f"{src.name}.annotations", columns, columns)
    return rows


def modelnet_rows(src: Any) -> Iterator[Row | Bad]:
    for i, ln in enumerate(read_text(src.annotations, f"{src.name}.annotations").splitlines(), 1):
        name = ln.strip()
        if not name:
            continue
        if "_" not in name:
            yield Bad(f"{src.annotations}:{i}", "malformed_row", f"{name!r} is not <shape>_<number>")
            continue
        yield {"name": name, "shape": name.rsplit("_", 1)[0]}


def modelnet_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    return {f"{src.name}.txt": "".join(r["name"] + "\n" for r in rows).encode(),
            f"{src.name}_shape_names.txt": "".join(c + "\n" for c in scene_classes(src)).encode()}


SPECS = {
    "cap3d": Spec("pointcloud", "caption", headerless(CAP3D), "{sample_id}_8192.npz", lambda r: [r["caption"]],
                  csv_export(CAP3D, header=False)),
    "cap3d_qa": Spec("pointcloud", "qa", headerless(CAP3D_QA), "{sample_id}_8192.npz", lambda r: [r["answer"]],
                     csv_export(CAP3D_QA, header=False), question=lambda r: r["question"], identity=lambda r: r["question"]),
    "modelnet40": Spec("pointcloud", "cls", modelnet_rows, "{name}_8192.npz", lambda r: [r["shape"]],
                       modelnet_export, classes=scene_classes),
}
