"""MCL source adapters on annotation files in the originals' formats, their bad rows, split
hygiene, config checks and the exports read back by the same adapters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.mcl import hygiene
from fusionweave.pipelines.mcl.config import MclConfig, SourceConfig
from fusionweave.pipelines.mcl.pipeline import check_files, check_stages, plan, split_check
from fusionweave.pipelines.fixtures.sample_mcl import generate
from fusionweave.pipelines.mcl.sources import SPECS, read_source


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import yaml

    root = tmp_path_factory.mktemp("mcl-src")
    path = generate(root, depth_model=root / "no-model")
    return yaml.safe_load(path.read_text())


def source(recipe: dict, name: str) -> SourceConfig:
    return SourceConfig.model_validate(next(s for s in recipe["mcl"]["sources"] if s["name"] == name))


def test_coco_captions_group_references_per_image(recipe: dict) -> None:
    recs, rej = read_source(source(recipe, "coco_caption_val"))
    assert rej == [] and len(recs) == 3
    assert all(r.task == "caption" and r.modality == "image" and len(r.answers) == 5 for r in recs)
    assert recs[0].media == "COCO_val2014_000000000100.jpg"
    again, _ = read_source(source(recipe, "coco_caption_val"))
    assert [r.key for r in again] == [r.key for r in recs]  # keys from source identity, stable


def test_vqa_joins_questions_and_annotations(recipe: dict) -> None:
    recs, rej = read_source(source(recipe, "vqav2"))
    assert rej == [] and [r.media for r in recs] == ["COCO_train2014_000000000006.jpg", "COCO_train2014_000000000007.jpg"]
    assert recs[0].question == "what number is picture 6?" and recs[0].answers == ["6"] * 10


def test_video_qa_answer_map_and_caption_lists(recipe: dict) -> None:
    recs, _ = read_source(source(recipe, "msrvtt_qa_test"))
    assert {(r.question, r.label) for r in recs} == {("what changes?", 0), ("is it a dog?", -1)}  # -1: not in the map
    caps, _ = read_source(source(recipe, "msrvtt_caption"))
    first = next(r for r in caps if r.media == "video0.mp4")
    assert first.answers == ["colours changing, clip 0", "a second caption of clip 0"]  # one record per video


def test_malformed_csv_rows_become_rejects_with_their_line(recipe: dict) -> None:
    recs, rej = read_source(source(recipe, "audiocaps"))
    assert [r["reason"] for r in rej] == ["malformed_row"]
    assert rej[0]["detail"].endswith("train.csv:7: 5 fields, the header has 4")
    assert {r.media for r in recs} == {"ytA.wav", "ytB.wav", "silence0.wav", "lowrate.wav", "ghost.wav"}
    caps, rej3d = read_source(source(recipe, "cap3d"))  # headerless, like the released Cap3D CSV
    assert len(caps) == 4 and [r["reason"] for r in rej3d] == ["malformed_row"]


def test_class_labels_and_unknown_classes(recipe: dict) -> None:
    recs, rej = read_source(source(recipe, "nyu"))
    assert [(r.answers, r.label) for r in recs] == [(["bedroom"], 1), (["kitchen"], 6)]
    assert [r["reason"] for r in rej] == ["unknown_class"] and recs[0].split_dir == "test_ood"
    mn, _ = read_source(source(recipe, "modelnet40"))
    assert [(r.answers[0], r.label, r.media) for r in mn] == [("airplane", 0, "airplane_0627_8192.npz"),
                                                               ("chair", 3, "chair_0890_8192.npz")]


def test_every_format_has_a_modality_and_an_export() -> None:
    assert {s.modality for s in SPECS.values()} == {"image", "video", "audio", "depth", "pointcloud"}
    assert {"coco_caption", "vqa", "gqa", "msrvtt_caption", "video_qa", "audiocaps", "audiocaps_qa", "audioset",
            "wavcaps", "clotho", "clotho_aqa", "cc3m", "llava_instruct", "scene_labels", "cap3d", "cap3d_qa",
            "modelnet40"} <= set(SPECS)


def test_other_formats_read(tmp_path: Path) -> None:
    (tmp_path / "gqa.json").write_text(json.dumps({"201": {"imageId": "n1", "question": "what?", "answer": "a cat"},
                                                   "202": "not an entry"}))
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/04rlf,Music\n")
    (tmp_path / "seg.csv").write_text("# Segments csv\n# YTID, start_seconds, end_seconds, positive_labels\n"
                                      'abc, 30.000, 40.000, "/m/09x0r,/m/04rlf"\nxyz, 0.0, 10.0, "/m/zzz"\n')
    (tmp_path / "wavcaps.json").write_text(json.dumps({"data": [{"id": "w1", "caption": "rain"}, {"id": "w2"}]}))
    (tmp_path / "aqa.csv").write_text("file_name,QuestionText,answer,confidence\n"
                                      + "".join(f"a.wav,is it raining?,{a},yes\n" for a in ("yes", "yes", "no")))
    (tmp_path / "cc3m.json").write_text(json.dumps([{"id": "1", "image": "GCC_1.jpg", "conversations": [
        {"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "a boat"}]}]))

    def read(fmt: str, ann: str, **kw: object) -> tuple:
        return read_source(SourceConfig(name="s", format=fmt, split="train", annotations=tmp_path / ann,
                                        media_root=tmp_path, **kw))
    recs, rej = read("gqa", "gqa.json")
    assert [(r.media, r.question, r.answers) for r in recs] == [("n1.jpg", "what?", ["a cat"])] and len(rej) == 1
    recs, rej = read("audioset", "seg.csv", labels=tmp_path / "labels.csv")
    assert recs[0].answers == ["Speech and Music"] and recs[0].media == "abc.wav"
    assert [r["reason"] for r in rej] == ["unknown_class"]
    recs, rej = read("wavcaps", "wavcaps.json")
    assert [r.media for r in recs] == ["w1.flac"] and [r["reason"] for r in rej] == ["malformed_row"]
    recs, _ = read("clotho_aqa", "aqa.csv")
    assert len(recs) == 1 and recs[0].answers == ["yes", "yes", "no"]  # three annotators, one question
    recs, _ = read("cc3m", "cc3m.json")
    assert recs[0].answers == ["a boat"] and recs[0].task == "caption"


def test_unsafe_media_paths_are_rejects(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"video": "../../etc/passwd", "caption": "x"},
                                                 {"video": "/abs.mp4", "caption": "y"}]))
    recs, rej = read_source(SourceConfig(name="v", format="msrvtt_caption", split="train",
                                         annotations=tmp_path / "a.json", media_root=tmp_path))
    assert recs == [] and [r["reason"] for r in rej] == ["unsafe_media_path"] * 2


def test_hygiene_missing_media_and_cross_split(recipe: dict) -> None:
    srcs = [source(recipe, n) for n in ("msrvtt_caption", "msrvtt_caption_test", "audiocaps")]
    records = [r for s in srcs for r in read_source(s)[0]]
    roots = {s.name: Path(s.media_root) for s in srcs}
    kept, missing = hygiene.missing_media(records, roots)
    assert [m["reason"] for m in missing] == ["missing_media"] and missing[0]["path"].endswith("ghost.wav")
    by_path, dup = hygiene.cross_split(kept, lambda r: hygiene.real_path(r, roots))
    assert [(d["reason"], d["split"]) for d in dup] == [("cross_split_duplicate", "train")]
    assert "video3.mp4" in dup[0]["detail"]
    assert any(r.media == "video3.mp4" and r.split == "test" for r in by_path)  # the eval set stays whole
    digests = hygiene.sha256_files([hygiene.real_path(r, roots) for r in kept])
    _, by_content = hygiene.cross_split(kept, lambda r: digests[hygiene.real_path(r, roots)])
    assert sorted(d["detail"].split(" ")[0] for d in by_content) == ["video3.mp4", "video4_copy.mp4"]  # a renamed copy


def test_plan_counts_on_the_sample_sources(recipe: dict) -> None:
    p = plan(MclConfig.model_validate(recipe["mcl"]))
    assert dict(p.stats["parse"].rejects) == {"malformed_row": 2, "unknown_class": 1}
    assert dict(p.stats["media"].rejects) == {"missing_media": 1}
    p = split_check(p, lambda r: hygiene.real_path(r, p.roots))
    assert dict(p.stats["splits"].rejects) == {"cross_split_duplicate": 1}  # by path; by content it is 2
    assert sum(1 for r in p.records if r.source == "llava_depth") == 8  # a QA record per conversation turn
    assert p.stats["parse"].rows_in == len(p.records) + len(p.rejects) == 53


def test_unbalanced_quote_is_one_bad_row(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('youtube_id,start_time,caption\nytA,0,"a dog barks\nytB,10,rain\nytC,20,wind\n')
    recs, rej = read_source(SourceConfig(name="a", format="audiocaps", split="train", annotations=tmp_path / "a.csv",
                                         media_root=tmp_path))
    assert [r.media for r in recs] == ["ytB.wav", "ytC.wav"]  # the rows after it are not swallowed
    assert [r["reason"] for r in rej] == ["malformed_row"] and ":2:" in rej[0]["detail"]


def test_more_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    (tmp_path / "seg.csv").write_text('abc, 30.0, 40.0, ","\n')
    recs, rej = read_source(SourceConfig(name="s", format="audioset", split="train", annotations=tmp_path / "seg.csv",
                                         labels=tmp_path / "labels.csv", media_root=tmp_path))
    assert recs == [] and [r["reason"] for r in rej] == ["malformed_row"]
    (tmp_path / "qa.json").write_text(json.dumps([{"video": "v.mp4", "question": "q?", "answer": "a"}]))
    (tmp_path / "map.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(BuildSetupError, match="should map answers to labels"):
        read_source(SourceConfig(name="v", format="video_qa", split="train", annotations=tmp_path / "qa.json",
                                 answer_map=tmp_path / "map.json", media_root=tmp_path))
    (tmp_path / "cap.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [
        {"image_id": [1], "id": 1, "caption": "unhashable id"}, {"image_id": 1, "id": 2, "caption": "fine"}]}))
    recs, rej = read_source(SourceConfig(name="c", format="coco_caption", split="train",
                                         annotations=tmp_path / "cap.json", media_root=tmp_path))
    assert [r.answers for r in recs] == [["fine"]] and [r["reason"] for r in rej] == ["malformed_row"]


def test_llava_turns_and_repeated_ids(tmp_path: Path) -> None:
    conv = lambda q, a: [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]  # noqa: E731
    (tmp_path / "l.json").write_text(json.dumps([
        {"id": "7", "image": "7.jpg", "conversations": conv("What colour is the bus?", "white and red")},
        {"id": "7", "image": "7.jpg", "conversations": conv("Describe it.", "A long description.")},
        {"id": "8", "image": "8.jpg", "conversations": [{"from": "gpt", "value": "no question"}]}]))
    src = SourceConfig(name="l", format="llava_instruct", split="train", annotations=tmp_path / "l.json",
                       media_root=tmp_path)
    recs, rej = read_source(src)
    assert [(r.question, r.answers) for r in recs] == [("What colour is the bus?", ["white and red"]),
                                                       ("Describe it.", ["A long description."])]
    assert [r["reason"] for r in rej] == ["malformed_row"]
    exported = json.loads(SPECS["llava_instruct"].export(src, [row for r in recs for row in r.rows])["l.json"])
    assert len(exported) == 2 and all("conversations" in e for e in exported)  # each conversation once


def test_lavis_coco_and_cap3d_export_in_their_own_form(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text(json.dumps([{"image": "val2014/a.jpg", "caption": ["one", "two"], "image_id": "a"}]))
    src = SourceConfig(name="k", format="coco_caption", split="val", annotations=tmp_path / "k.json",
                       media_root=tmp_path)
    recs, _ = read_source(src)
    assert recs[0].media == "val2014/a.jpg" and recs[0].answers == ["one", "two"]
    out = json.loads(SPECS["coco_caption"].export(src, recs[0].rows)["k.json"])
    assert out == [{"image": "val2014/a.jpg", "caption": ["one", "two"], "image_id": "a"}]  # LAVIS in, LAVIS out
    (tmp_path / "c.csv").write_text("u1,a chair\n")
    c3 = SourceConfig(name="c3", format="cap3d", split="train", annotations=tmp_path / "c.csv", media_root=tmp_path)
    recs, _ = read_source(c3)
    assert SPECS["cap3d"].export(c3, recs[0].rows)["c3.csv"] == b"u1,a chair\n"  # headerless, as released


def test_symlink_out_of_the_media_root_is_a_reject(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret.wav"
    root.mkdir()
    outside.write_bytes(b"RIFF")
    (root / "ok.wav").write_bytes(b"RIFF")
    (root / "link.wav").symlink_to(outside)
    (root / "a.csv").write_text("youtube_id,start_time,caption\nok,0,fine\nlink,0,escapes\n")
    src = SourceConfig(name="a", format="audiocaps", split="train", annotations=root / "a.csv", media_root=root)
    recs, _ = read_source(src)
    kept, rej = hygiene.missing_media(recs, {"a": root})
    assert [r.media for r in kept] == ["ok.wav"] and [r["reason"] for r in rej] == ["unsafe_media_path"]
    kept, rej = hygiene.missing_media(recs, {"a": root}, follow_outside=True)
    assert len(kept) == 2 and rej == []


def test_bad_configs_name_the_field(recipe: dict, tmp_path: Path) -> None:
    cfg = recipe["mcl"]
    with pytest.raises(ValueError, match="unique"):
        MclConfig.model_validate({**cfg, "sources": cfg["sources"] + cfg["sources"][:1]})
    with pytest.raises(ValueError, match="image -> video"):
        MclConfig.model_validate({**cfg, "stages": [{"modality": "video"}, {"modality": "image"}]})
    with pytest.raises(ValueError, match="needs `questions`"):
        SourceConfig(name="q", format="vqa", split="train", annotations=tmp_path, media_root=tmp_path)
    bad = MclConfig.model_validate({**cfg, "stages": [{**s, "mixture": {"clotho": 1.0}} if s["modality"] == "audio"
                                                      else s for s in cfg["stages"]]})
    with pytest.raises(BuildSetupError, match=r"stages\[2\].mixture: 'clotho' is audio test"):
        check_stages(bad)
    partial = MclConfig.model_validate({**cfg, "stages": [{**s, "mixture": {"audiocaps": 1.0}}
                                                          if s["modality"] == "audio" else s for s in cfg["stages"]]})
    with pytest.raises(BuildSetupError, match=r"no ratio for the audio training source\(s\) \['audiocaps_qa'\]"):
        check_stages(partial)
    gone = MclConfig.model_validate({**cfg, "sources": [{**cfg["sources"][0], "annotations": str(tmp_path / "no.json")}]})
    with pytest.raises(BuildSetupError, match=r"sources\[0\] \(coco_caption\).annotations: file not found"):
        check_files(gone)
    (tmp_path / "broken.json").write_text("{not json")
    broken = SourceConfig.model_validate({**cfg["sources"][0], "annotations": str(tmp_path / "broken.json")})
    with pytest.raises(BuildSetupError, match="not valid JSON"):
        read_source(broken)


def test_exports_read_back_as_the_original_format(recipe: dict, tmp_path: Path) -> None:
    """Each format's export, read by the same adapter, gives the same records."""
    for name in ("coco_caption_val", "vqav2", "msrvtt_qa", "audiocaps", "clotho", "llava_depth", "nyu", "cap3d",
                 "modelnet40"):
        src = source(recipe, name)
        recs, _ = read_source(src)
        rows = [json.loads(json.dumps(row, sort_keys=True)) for r in recs for row in r.rows]  # as stored in shards
        files = SPECS[src.format].export(src, rows)
        for fname, data in files.items():
            (tmp_path / fname).write_bytes(data)
        main = next(f for f in files if not f.endswith(("_ans2label.json", "_shape_names.txt", "_questions.json")))
        back = src.model_copy(update={"annotations": tmp_path / main,
                                      **({"questions": tmp_path / f"{name}_questions.json",
                                          "annotations": tmp_path / f"{name}_annotations.json"} if src.format == "vqa" else {})})
        again, rej = read_source(back)
        assert rej == [] and [(r.key, r.answers, r.question, r.label) for r in again] == \
            [(r.key, r.answers, r.question, r.label) for r in recs], name


def test_image_media_checks_reuse_validation() -> None:
    from fusionweave.pipelines.mcl.media import MediaError, valid_image
    from fusionweave.pipelines.fixtures.sample_mcl import jpg

    with pytest.raises(MediaError) as err:
        valid_image(b"\xff\xd8\xff truncated", "original")
    assert err.value.reason == "image_decode_error"
    with pytest.raises(MediaError) as err:
        valid_image(b"not an image", "original")
    assert err.value.reason == "image_not_an_image"
    data = jpg(0, 80, 60)
    assert valid_image(data, "original") == (data, "jpg", 80, 60)  # original bytes kept
    _, ext, w, h = valid_image(jpg(0, 80, 60, orientation=6), "jpg")
    assert (ext, w, h) == ("jpg", 60, 80)  # EXIF-rotated: stored upright
