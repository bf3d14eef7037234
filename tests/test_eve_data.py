"""EVE's data: bad rows and samples are counted by reason, never crash or train; the JSON loader
splits rows over ranks, resumes mid-epoch exactly and gives the same order with workers; caption
shards stream through ShardStream."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eve_helpers import IMAGE, llava_rows, png, shape_image, write_json
from fusionweave.experts.tiny_models import CAPTION_WORDS, CHAT_WORDS, make_word_tokenizer
from fusionweave.trainers.eve.data import ConversationLoader, Encoder, loader_errors, read_rows, shard_loader
from fusionweave.trainers.eve.image import num_tokens


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    tok = make_word_tokenizer([*CHAT_WORDS, *CAPTION_WORDS, "square", "circle"])
    return Encoder(tok, tok.convert_tokens_to_ids("<image>"), IMAGE, "plain", 64)


def keys(batches: list[dict]) -> list[str]:
    return [k for b in batches for k in b["keys"]]


def test_bad_rows_are_counted_rejects(tmp_path: Path, encoder: Encoder) -> None:
    good = llava_rows(tmp_path, 6)
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    conv = good[0]["conversations"]
    bad = [{"id": "gone", "image": "images/missing.png", "conversations": conv},
           {"id": "garbled", "image": "images/broken.png", "conversations": conv},
           "not a row", {"id": "noconv", "image": "images/0.png"},
           {"id": "text", "conversations": conv},
           {"id": "noimg", "image": "images/0.png", "conversations": [{"from": "human", "value": "hi"}, conv[1]]},
           {"id": "two", "image": "images/0.png",
            "conversations": [{"from": "human", "value": "<image> <image>"}, conv[1]]}]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([json.dumps(r) for r in good + bad] + ['{"id": "cut", "image": ']) + "\n")
    loader = ConversationLoader(read_rows(path, tmp_path), encoder, batch_size=4, workers=0)
    got = list(loader)
    assert len(got) == len(loader) == 4 and set(keys(got)) == {r["id"] for r in good}
    errors = loader_errors(loader)
    errors.pop("batch_refilled", None)  # a batch of only bad rows borrows the next batch's good ones
    # broken rows: a string, one without conversations, a cut JSON line; "text": a text-only row
    assert errors == {"broken_row": 3, "missing_image_file": 1, "undecodable_image": 1, "no_image": 1,
                      "template_no_image": 1, "template_multi_image": 1}
    for b in got:
        assert len(b["input_ids"]) == len(b["labels"]) == len(b["pixels"]) == len(b["grids"]) > 0


def test_a_json_that_is_not_a_list_of_rows_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cut.json").write_text('[{"id": 1,')
    with pytest.raises(ValueError, match="not JSON"):
        read_rows(tmp_path / "cut.json", tmp_path)
    with pytest.raises(ValueError, match="expected a JSON array"):
        read_rows(write_json(tmp_path / "b.json", {"rows": []}), tmp_path)
    with pytest.raises(FileNotFoundError):
        read_rows(tmp_path / "none.json", tmp_path)


def test_samples_fit_max_length_with_the_image_tokens(tmp_path: Path, encoder: Encoder) -> None:
    rows = llava_rows(tmp_path, 8)
    rows[0]["conversations"][1]["value"] = " ".join(["red"] * 200)  # truncated to fit
    loader = ConversationLoader(read_rows(write_json(tmp_path / "r.json", rows), tmp_path), encoder, 8)
    b = next(iter(loader))
    for ids, grid in zip(b["input_ids"], b["grids"]):
        assert len(ids) - 1 + num_tokens(tuple(grid.tolist())) <= encoder.max_length


def test_ranks_split_rows_and_resume_continues_exactly(tmp_path: Path, encoder: Encoder) -> None:
    rows = read_rows(write_json(tmp_path / "r.json", llava_rows(tmp_path, 21)), tmp_path)
    ranks = [ConversationLoader(rows, encoder, 3, rank=r, world=2, seed=5) for r in range(2)]
    r0, r1 = [keys(list(ld)) for ld in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 4 and len(r0) == len(r1) == 10 and not set(r0) & set(r1)
    full = ConversationLoader(rows, encoder, 3, seed=5)
    epoch0 = [keys([b]) for b in full]
    epoch1 = [keys([b]) for b in full]
    assert epoch0 != epoch1 and sorted(sum(epoch0, [])) == sorted(sum(epoch1, []))  # reshuffled per epoch
    first = ConversationLoader(rows, encoder, 3, seed=5)
    it = iter(first)
    taken = [keys([next(it)]) for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 3}
    again = ConversationLoader(rows, encoder, 3, seed=5, workers=2)  # resumed, and read by two workers
    again.load_state_dict(state)
    assert taken + [keys([b]) for b in again] == epoch0


def test_caption_shards_stream_with_rejects_counted(tmp_path: Path, encoder: Encoder) -> None:
    import random

    from fusionweave.pipelines.storage.shard_sink import write_shard

    rng = random.Random(0)
    samples = []
    for i in range(9):
        im, cap = shape_image(rng)
        samples.append({"__key__": f"k{i:03d}", "png": png(im), "txt": cap, "json": json.dumps({"image_id": i})})
    samples[2]["png"] = b"\x89PNG garbage"
    del samples[4]["txt"]
    write_shard(tmp_path / "shard-000000.tar", samples[:5])
    write_shard(tmp_path / "shard-000001.tar", samples[5:])
    loader = shard_loader([tmp_path], encoder, batch_size=2, shuffle_buffer=4)
    got = list(loader)
    assert len(got) == len(loader) and all(len(b["keys"]) == 2 for b in got)
    assert "k002" not in keys(got) and "k004" not in keys(got)
    assert loader_errors(loader)["undecodable_image"] >= 1 and loader_errors(loader)["no_caption"] >= 1
    b = got[0]
    assert b["pixels"].shape[:2] == (2, 3) and b["grids"].shape == (2, 2)
    assert all((lab[:2] == -100).all() and (lab[2:] != -100).all() for lab in b["labels"])  # <s> <image> | caption
