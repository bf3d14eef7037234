"""The one MCL record schema shared by every modality, source and split.

Every sample's `json` member is a record:

| field      | meaning                                                                       |
|------------|-------------------------------------------------------------------------------|
| `key`      | stable id: a hash of (source, media, question id or question); never run order |
| `modality` | image, video, audio, depth or pointcloud                                       |
| `task`     | caption, qa or cls                                                             |
| `question` | the question (qa), "" otherwise                                                |
| `answers`  | reference captions (caption), answers (qa, every annotator's, repeats kept),   |
|            | or the class name (cls)                                                        |
| `label`    | the class index (cls) or the answer-map label (video qa); -1: none or unmapped |
| `dataset`  | the source dataset's format (coco_caption, msrvtt_qa, clotho, cap3d, ...)      |
| `source`   | the configured source name (what stage mixtures refer to)                      |
| `split`    | the official split: train, val or test                                         |
| `domain`   | in, or out for out-of-domain eval sets (kept in their own `<split>_ood` folder)|
| `media`    | the media file's path relative to the source's media root, as annotated        |
| `media_info` | what preprocessing found: frames, seconds, chunks, points, width, height     |

Every field is present with one type in every sample, so `datasets` infers one schema per
modality and split. The original annotation rows travel beside it in `src.jsonl` (one row per
line; their columns differ by source), so exports give the original formats back.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from fusionweave.transforms.keys import key_for

MODALITIES = ("image", "video", "audio", "depth", "pointcloud")
TASKS = ("caption", "qa", "cls")
SPLITS = ("train", "val", "test")


@dataclass
class Record:
    modality: str
    task: str
    dataset: str
    source: str
    split: str
    media: str
    answers: list[str]
    question: str | None = None
    label: int | None = None
    domain: str = "in"
    rows: list[dict[str, Any]] = field(default_factory=list)
    identity: str = ""  # what distinguishes records sharing a media file (question id, question)
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = key_for(f"mcl|{self.source}|{self.media}|{self.identity}")

    @property
    def split_dir(self) -> str:
        """Out-of-domain eval sets are kept apart from the in-domain ones of the same split."""
        return self.split if self.domain == "in" else f"{self.split}_ood"

    @property
    def train(self) -> bool:
        return self.split == "train"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("identity")
        return d

    def members(self, media_info: dict[str, Any]) -> dict[str, Any]:
        """The sample's `json` (uniform types) and `src.jsonl` members."""
        d = self.to_json()
        rows = d.pop("rows")
        d.update(question=self.question or "", label=-1 if self.label is None else self.label, media_info=media_info)
        return {"json": d, "src.jsonl": "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                                for r in rows)}
