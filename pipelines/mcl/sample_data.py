"""Small MCL source data in the originals' own formats, for the demo, tests and benchmarks:
COCO captions + VQAv2, MSRVTT caption + QA (mp4 written with PyAV, every frame one known colour),
AudioCaps, AudioCaps-QA, Clotho (wav sine tones), LLaVA-Instruct + NYU scene labels (RGB images;
depth is predicted), Cap3D + Cap3D-QA + ModelNet40 (`*_8192.npz`). Bad inputs are planted and
listed with the reject reason each must produce (each item appears in its reject's detail)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

PLANTED = {"video_undecodable": ["corrupt"], "audio_empty": ["silence0"], "audio_rate_too_low": ["lowrate"],
           "points_nonfinite": ["nanpoints"], "missing_media": ["ghost"], "malformed_row": ["train.csv:7", "Objaverse.csv:5"],
           "cross_split_duplicate": ["video3", "video4_copy"], "unknown_class": ["'alien'"]}
VIDEO_FRAMES = 10
NYU_CLASSES = ["bathroom", "bedroom", "bookstore", "classroom", "dining_room", "home_office", "kitchen", "living_room",
               "office", "study"]


def frame_colour(video: int, frame: int) -> tuple[int, int, int]:
    return ((frame * 25) % 256, 255 - (frame * 25) % 256, (video * 60 + 30) % 256)


def mp4(video: int, frames: int = VIDEO_FRAMES, size: int = 64) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            arr = np.full((size, size, 3), frame_colour(video, i), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def wav(seconds: float, freq: float, rate: int = 16_000) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def jpg(seed: int, w: int = 64, h: int = 48, orientation: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (np.linspace(0, 255, w)[None, :, None] * rng.random(3)[None, None, :] + rng.integers(0, 40, (h, w, 3)))
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation  # e.g. 6: shown rotated 90 degrees, as phone photos are
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def npz(seed: int, n: int = 9000, nan: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.normal(size=(n, 3)) * 2 + seed, rng.random((n, 3))], axis=1).astype(np.float32)
    if nan:
        pts[5, 0] = np.nan
    buf = io.BytesIO()
    np.savez(buf, arr_0=pts)
    return buf.getvalue()


def src(name: str, fmt: str, split: str, **fields: Any) -> dict[str, Any]:
    """A recipe's source entry."""
    return {"name": name, "format": fmt, "split": split, **fields}


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _json(path: Path, obj: Any) -> None:
    _write(path, json.dumps(obj, indent=1))


def image_data(root: Path) -> list[dict[str, Any]]:
    d = root / "coco"
    for i in range(8):
        _write(d / "images" / f"COCO_train2014_{i:012d}.jpg", jpg(i))
    for i in range(100, 103):
        _write(d / "images" / f"COCO_val2014_{i:012d}.jpg", jpg(i))

    def captions(ids: list[int], sub: str, per: int) -> dict[str, Any]:
        return {"images": [{"id": i, "file_name": f"COCO_{sub}_{i:012d}.jpg"} for i in ids],
                "annotations": [{"image_id": i, "id": i * 10 + k, "caption": f"a picture number {i}, take {k}"}
                                for i in ids for k in range(per)]}
    _json(d / "captions_train2014.json", captions(list(range(6)), "train2014", 1))
    _json(d / "captions_val2014.json", captions([100, 101, 102], "val2014", 5))
    _json(d / "vqa_questions_train.json", {"data_subtype": "train2014", "questions": [
        {"image_id": i, "question": f"what number is picture {i}?", "question_id": i * 10} for i in (6, 7)]})
    _json(d / "vqa_annotations_train.json", {"annotations": [
        {"question_id": i * 10, "image_id": i, "multiple_choice_answer": str(i),
         "answers": [{"answer": str(i), "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]}
        for i in (6, 7)]})
    m = str(d / "images")
    return [src("coco_caption", "coco_caption", "train", annotations=str(d / "captions_train2014.json"), media_root=m),
            src("coco_caption_val", "coco_caption", "val", annotations=str(d / "captions_val2014.json"), media_root=m),
            src("vqav2", "vqa", "train", questions=str(d / "vqa_questions_train.json"),
                annotations=str(d / "vqa_annotations_train.json"), media_root=m)]


def video_data(root: Path) -> list[dict[str, Any]]:
    d = root / "msrvtt"
    for v in range(6):
        _write(d / "videos" / f"video{v}.mp4", mp4(v))
    _write(d / "videos" / "video4_copy.mp4", mp4(4))  # the test clip video4 under another name
    _write(d / "videos" / "corrupt.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 200)
    train = [{"video": f"video{v}.mp4", "caption": f"colours changing, clip {v}"} for v in (0, 1, 2, 3)]
    train += [{"video": "video0.mp4", "caption": "a second caption of clip 0"},
              {"video": "corrupt.mp4", "caption": "never decodes"},
              {"video": "video4_copy.mp4", "caption": "a copy of a test clip"}]
    test = [{"video": f"video{v}.mp4", "caption": [f"clip {v} changes colour", f"colours of clip {v}"]} for v in (3, 4)]
    qa = [{"video": f"video{v}.mp4", "question": "what changes?", "answer": "colour", "question_id": v} for v in (0, 1)]
    qa_test = [{"video": "video5.mp4", "question": "what changes?", "answer": "colour", "question_id": 50},
               {"video": "video5.mp4", "question": "is it a dog?", "answer": "no", "question_id": 51}]
    _json(d / "msrvtt_caption_train.json", train)
    _json(d / "msrvtt_caption_test.json", test)
    _json(d / "msrvtt_qa_train.json", qa)
    _json(d / "msrvtt_qa_test.json", qa_test)
    _json(d / "train_ans2label.json", {"colour": 0, "yes": 1})
    m = str(d / "videos")
    return [src("msrvtt_caption", "msrvtt_caption", "train",
                annotations=str(d / "msrvtt_caption_train.json"), media_root=m),
            src("msrvtt_caption_test", "msrvtt_caption", "test",
                annotations=str(d / "msrvtt_caption_test.json"), media_root=m),
            src("msrvtt_qa", "video_qa", "train",
                annotations=str(d / "msrvtt_qa_train.json"), answer_map=str(d / "train_ans2label.json"), media_root=m),
            src("msrvtt_qa_test", "video_qa", "test",
                annotations=str(d / "msrvtt_qa_test.json"), answer_map=str(d / "train_ans2label.json"), media_root=m)]


def audio_data(root: Path) -> list[dict[str, Any]]:
    d = root / "audio"
    for i, yid in enumerate(["ytA", "ytB", "ytC"]):
        _write(d / "audiocaps" / f"{yid}.wav", wav(3.0, 400.0 * (i + 1)))
    _write(d / "audiocaps" / "ytLong.wav", wav(12.0, 700.0))
    _write(d / "audiocaps" / "silence0.wav", wav(0.0, 100.0))
    _write(d / "audiocaps" / "lowrate.wav", wav(2.0, 300.0, rate=8000))
    _write(d / "audiocaps" / "train.csv", "audiocap_id,youtube_id,start_time,caption\n"
           "1,ytA,0,a low tone hums\n2,ytB,10,a middle tone hums\n3,silence0,0,nothing at all\n"
           "4,lowrate,0,a tone recorded at 8 kHz\n5,ghost,0,this file does not exist\n"
           "6,ytC,30,a broken row,with an extra field\n")
    _write(d / "audiocaps" / "test.csv", "audiocap_id,youtube_id,start_time,caption\n"
           + "".join(f"{10 + k},ytLong,0,a long tone take {k}\n" for k in range(5)))
    _write(d / "audiocaps" / "qa.csv", "youtube_id,question,answer,caption\nytA,is it loud?,no,a low tone hums\n"
           "ytB,what is heard?,a tone,a middle tone hums\n")
    for i in range(2):
        _write(d / "clotho" / f"clip{i}.wav", wav(4.0, 900.0 + 200 * i))
    _write(d / "clotho" / "clotho_captions_evaluation.csv", "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
           + "".join(f"clip{i}.wav" + "".join(f",tone {i} caption {k}" for k in range(5)) + "\n" for i in range(2)))
    ac = str(d / "audiocaps")
    return [src("audiocaps", "audiocaps", "train", annotations=str(d / "audiocaps" / "train.csv"), media_root=ac),
            src("audiocaps_test", "audiocaps", "test", annotations=str(d / "audiocaps" / "test.csv"), media_root=ac),
            src("audiocaps_qa", "audiocaps_qa", "train", annotations=str(d / "audiocaps" / "qa.csv"), media_root=ac),
            src("clotho", "clotho", "test",
                annotations=str(d / "clotho" / "clotho_captions_evaluation.csv"), media_root=str(d / "clotho"))]


def depth_data(root: Path) -> list[dict[str, Any]]:
    d = root / "depth"
    for i in range(4):
        _write(d / "llava" / f"{i:012d}.jpg", jpg(200 + i, 80, 60, orientation=6 if i == 3 else 1))
    for i in range(3):
        _write(d / "nyu" / f"scene{i}.jpg", jpg(300 + i, 64, 48))
    conv = [{"id": f"{i:012d}", "image": f"{i:012d}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is in the picture?"}, {"from": "gpt", "value": f"a gradient {i}"},
        {"from": "human", "value": "Is it bright?"}, {"from": "gpt", "value": "yes"}]} for i in range(4)]
    _json(d / "llava_instruct.json", conv)
    _write(d / "nyu" / "labels.csv", "image,scene\nscene0.jpg,bedroom\nscene1.jpg,kitchen\nscene2.jpg,alien\n")
    return [src("llava_depth", "llava_instruct", "train",
                annotations=str(d / "llava_instruct.json"), media_root=str(d / "llava")),
            src("nyu", "scene_labels", "test", domain="out",
                annotations=str(d / "nyu" / "labels.csv"), media_root=str(d / "nyu"), classes=NYU_CLASSES)]


def pointcloud_data(root: Path) -> list[dict[str, Any]]:
    d = root / "pointcloud"
    for i in range(4):
        _write(d / "points" / f"obj{i}_8192.npz", npz(i))
    _write(d / "points" / "nanpoints_8192.npz", npz(9, nan=True))
    for name in ("airplane_0627", "chair_0890"):
        _write(d / "points" / f"{name}_8192.npz", npz(len(name)))
    _write(d / "Cap3D_automated_Objaverse.csv", "obj0,a cloud of points\nobj1,another cloud\nobj2,a third cloud\n"
           "nanpoints,a cloud with a hole\nbroken row without a caption\n")
    _write(d / "cap3d_qa.csv", "sample_id,question,answer\nobj3,what is it?,a cloud\n")
    _write(d / "modelnet40_test.txt", "airplane_0627\nchair_0890\n")
    _write(d / "modelnet40_shape_names.txt", "airplane\nbathtub\nbed\nchair\n")
    p = str(d / "points")
    return [src("cap3d", "cap3d", "train", annotations=str(d / "Cap3D_automated_Objaverse.csv"), media_root=p),
            src("cap3d_qa", "cap3d_qa", "train", annotations=str(d / "cap3d_qa.csv"), media_root=p),
            src("modelnet40", "modelnet40", "test",
                annotations=str(d / "modelnet40_test.txt"), labels=str(d / "modelnet40_shape_names.txt"), media_root=p)]


def generate(out: Path, depth_model: Path | None = None, seed: int = 0) -> Path:
    """Write the sources under OUT and OUT/mcl.yaml, a recipe that builds them; returns the recipe."""
    out = Path(out).resolve()
    sources = image_data(out) + video_data(out) + audio_data(out) + depth_data(out) + pointcloud_data(out)
    if depth_model is None:
        from fusionweave.experts.tiny_models import TINY_MODELS

        depth_model = out / "models" / "depth"
        if not depth_model.exists():
            TINY_MODELS["depth"](depth_model)
    recipe = {"seed": seed, "ray": {"num_cpus": 2}, "mcl": {
        "shard_size": 4, "sources": sources, "depth": {"model": str(depth_model), "batch_size": 4},
        "stages": [{"modality": "image", "mixture": {"coco_caption": 0.6, "vqav2": 0.4}},
                   {"modality": "video", "mixture": {"msrvtt_caption": 0.5, "msrvtt_qa": 0.5}},
                   {"modality": "audio", "mixture": {"audiocaps": 0.56, "audiocaps_qa": 0.44}},
                   {"modality": "depth"}, {"modality": "pointcloud", "mixture": {"cap3d": 0.7, "cap3d_qa": 0.3}}]},
        "card": {"pretty_name": "MCL sample (generated)"}}
    path = out / "mcl.yaml"
    _write(path, yaml.safe_dump(recipe, sort_keys=False))
    return path
