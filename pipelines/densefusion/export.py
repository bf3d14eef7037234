"""Exports of the captioned shards, in the forms the originals are read in:

- `densefusion.jsonl`: one `{image_id, image_path, url, caption}` per line, as DenseFusion-1M was
  released, with images under `images/NNNNNN/{image_id}.png` (NNNNNN: the shard's number);
- `llava_pretrain.json`: LLaVA conversations (`<image>` as the human turn, the caption as the gpt
  turn) for pre-align / pre-train, so the LLaVA recipe trains on it unchanged;
- for the teacher seed set, `teacher_sft.json`: the fusion prompt with `<image>` as the human turn
  and the teacher's caption as the gpt turn, to fine-tune the pivot.
Each shard is exported in parallel into `_work/`; the stage's conclusion joins them in shard order.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any


from fusionweave.pipelines.storage.atomic import write_bytes_atomic
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.runner import PartResult, Stage
from fusionweave.pipelines.storage.shard_source import iter_image_samples
from fusionweave.transforms.image_validate import open_image

STAGE = "export"
JSONL, LLAVA, SFT = "densefusion.jsonl", "llava_pretrain.json", "teacher_sft.json"


def image_rel(shard: int, image_id: str, ext: str) -> str:
    return f"images/{shard:06d}/{image_id}.{ext}"


def conversation(image_id: str, image: str, human: str, caption: str) -> dict[str, Any]:
    return {"id": image_id, "image": image,
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": caption}]}


def export_part(folder: StageFolder, part: dict[str, Any], images: str, sft: bool) -> PartResult:
    shard = int(part["part"])
    lines, convs = [], []
    n = unconverted = 0
    for s in iter_image_samples(part["input"], part.get("expected")):
        if isinstance(s, dict):
            raise RuntimeError(f"export: {part['input']} is damaged: {s}")  # our own shards, verified
        n += 1
        caption = s.members["txt"].decode("utf-8")
        image_id = str(s.meta.get("image_id", s.key))
        path = ""
        if images != "none":
            ext, data = s.image_ext, s.members[s.image_ext]
            if images == "png" and ext != "png":
                try:
                    buf = io.BytesIO()
                    with open_image(data) as im:
                        im.save(buf, "PNG")
                    ext, data = "png", buf.getvalue()
                except Exception:  # noqa: BLE001 - keep the original bytes under their own extension
                    unconverted += 1
            path = image_rel(shard, image_id, ext)
            write_bytes_atomic(folder.dir / path, data)
        lines.append({"image_id": image_id, "image_path": path, "url": s.meta.get("url"), "caption": caption})
        human = "<image>\n" + s.meta["engine_prompt"] if sft else "<image>"
        convs.append(conversation(image_id, path, human, caption))
    out = folder.work / f"part-{part['part']}.json"
    write_bytes_atomic(out, json.dumps({"jsonl": lines, "llava": convs}).encode())
    # no shard: the rows go into the stage's export files, written once every part is done
    return PartResult(n, [STAGE], count=n, extra={"result": str(out), "not_png": unconverted})


def shard_parts(stage_dir: Path) -> list[dict[str, Any]]:
    entries = StageFolder(stage_dir.parent, stage_dir.name).entries()
    return [{"part": p, "input": str(stage_dir / e.shard), "expected": e.count}
            for p, e in sorted(entries.items()) if e.shard]


def stage(out: Path, source: str, images: str, name: str = STAGE, sft: bool = False) -> Stage:
    folder = StageFolder(out, name)

    def conclude(entries: dict[str, PartEntry]) -> dict[str, Any]:
        lines, convs = [], []
        for p in sorted(entries):
            got = json.loads(Path(entries[p].extra.pop("result")).read_text())
            lines += got["jsonl"]
            convs += got["llava"]
        write_bytes_atomic(folder.dir / JSONL,
                           "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode())
        write_bytes_atomic(folder.dir / (SFT if sft else LLAVA),
                           json.dumps(convs, ensure_ascii=False, indent=1).encode())
        return {"files": [JSONL, SFT if sft else LLAVA], "images": images, "reads": source}

    return Stage(name, plan=lambda: shard_parts(Path(out) / source), work=lambda p: export_part(folder, p, images, sft),
                 upstream=source, conclude=conclude)
