import pyarrow as pa
import pytest

from fusionweave.transforms.step import Filter, Step, StepChain, reject, split_rejects


class Odd(Filter):
    name = "odd"

    def reasons(self, batch):
        return ["odd" if v % 2 else None for v in batch.column("v").to_pylist()]


class Big(Filter):
    name = "big"

    def reasons(self, batch):
        return ["big" if v > 6 else None for v in batch.column("v").to_pylist()]


class Double(Step):
    name = "double"

    def process(self, batch):
        return batch.set_column(0, "v", pa.array([v * 2 for v in batch.column("v").to_pylist()]))


class Dropper(Step):
    name = "dropper"

    def process(self, batch):
        return batch.slice(1)


def test_chain_collects_stats_and_keeps_rejects():
    t = pa.table({"v": list(range(10)), "key": [str(i) for i in range(10)]})
    kept, rejected, stats = StepChain([Odd(), Big(), Double()])(t)
    assert kept.column("v").to_pylist() == [0, 4, 8, 12]
    assert sorted(rejected.column("key").to_pylist()) == ["1", "3", "5", "7", "8", "9"]
    assert stats["odd"].rows_in == 10 and stats["odd"].rows_out == 5 and stats["odd"].rejects == {"odd": 5}
    assert stats["big"].rows_in == 5 and stats["big"].rows_out == 4 and stats["big"].rejects == {"big": 1}
    assert stats["double"].rows_in == stats["double"].rows_out == 4
    for st in stats.values():
        assert st.rows_in == st.rows_out + sum(st.rejects.values())
        assert st.seconds >= 0
    assert set(rejected.column("_reject_step").to_pylist()) == {"odd", "big"}


def test_first_reason_wins():
    t = pa.table({"v": [1, 2]})
    t = reject(t, "a", ["first", None])
    t = reject(t, "b", ["second", "other"])
    _, rej = split_rejects(t)
    assert rej.column("_reject_reason").to_pylist() == ["first", "other"]
    assert rej.column("_reject_step").to_pylist() == ["a", "b"]


def test_a_step_may_not_drop_rows():
    with pytest.raises(RuntimeError, match="changed the row count"):
        StepChain([Dropper()])(pa.table({"v": [1, 2, 3]}))


def test_reason_count_must_match():
    with pytest.raises(ValueError, match="reasons for 2 rows"):
        reject(pa.table({"v": [1, 2]}), "x", ["a"])


def test_duplicate_step_names_refused():
    with pytest.raises(ValueError, match="unique"):
        StepChain([Odd(), Odd()])


def test_transforms_import_no_engine_or_model_framework():
    import ast
    from pathlib import Path

    banned = {"ray", "apache_beam", "torch", "transformers", "ultralytics", "paddle", "onnxruntime"}
    files = list((Path(__file__).resolve().parents[1] / "transforms").glob("*.py"))
    assert files
    for f in files:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in banned, f"{f} imports {n}"


class Residue(Filter):
    """One reason per value: more distinct reasons than a byte of codes holds."""

    name = "residue"

    def reasons(self, batch):
        return [f"r{v}" if v % 600 else None for v in batch.column("v").to_pylist()]


def test_more_than_255_string_reasons_keep_their_names():
    t = pa.table({"v": list(range(1200))})
    kept, rej, stats = StepChain([Residue()])(t)
    assert kept.column("v").to_pylist() == [0, 600]
    assert rej.num_rows == 1198
    assert rej.column("_reject_reason").to_pylist() == [f"r{v}" for v in rej.column("v").to_pylist()]
    assert set(rej.column("_reject_step").to_pylist()) == {"residue"}
    assert len(stats["residue"].rejects) == 1198 and stats["residue"].rows_out == 2


class ArrowMasks(Filter):
    name = "arrow_masks"

    def masks(self, batch):
        v = batch.column("v")
        return [("negative", pa.compute.less(v, 0)), ("seven", pa.compute.equal(v, 7))]


def test_arrow_masks_with_nulls_reject_only_where_they_hold():
    t = pa.table({"v": pa.chunked_array([[1, -2, None], [7, -1, 3]])})
    kept, rej, stats = StepChain([ArrowMasks(), Odd()])(t.filter(pa.compute.is_valid(t.column("v"))))
    assert kept.column("v").to_pylist() == []  # 1, 3 odd; -2, -1 negative; 7 seven
    assert dict(zip(rej.column("v").to_pylist(), rej.column("_reject_reason").to_pylist())) == \
        {1: "odd", -2: "negative", 7: "seven", -1: "negative", 3: "odd"}
    kept, rej, _ = StepChain([ArrowMasks()])(t)  # a null value compares null: the row is kept
    assert kept.column("v").to_pylist() == [1, None, 3] and stats["arrow_masks"].rejects == {"negative": 2, "seven": 1}


class ShortMask(Filter):
    name = "short_mask"

    def masks(self, batch):
        return [("x", [True])]


def test_a_mask_of_the_wrong_length_names_its_step():
    with pytest.raises(ValueError, match="'short_mask' returned a mask of 1 bool values for 3 rows"):
        StepChain([ShortMask()])(pa.table({"v": [1, 2, 3]}))


def test_reject_labels_are_dictionaries_and_count_across_steps():
    from fusionweave.pipelines.runner import reject_counts
    from fusionweave.pipelines.storage.shard_sink import rejects_table
    from fusionweave.transforms.step import (LABEL, REJECT_REASON, REJECT_STEP, concat_tables, ensure_reject_columns,
                                             is_label)

    t = pa.table({"v": list(range(10)), "key": [str(i) for i in range(10)]})
    _, one, _ = StepChain([Odd(), Big()])(t)  # one split: a byte per label index
    assert one.schema.field(REJECT_STEP).type == LABEL and one.schema.field(REJECT_REASON).type == LABEL
    _, rej, _ = StepChain([Odd(), Double(), Big()])(t)  # a transforming step between: two reject tables joined
    assert is_label(rej.schema.field(REJECT_STEP).type) and is_label(rej.schema.field(REJECT_REASON).type)
    # a table read back from a file written with string reject columns is given their types
    old = ensure_reject_columns(pa.table({"v": [5], "key": ["x"], REJECT_STEP: ["odd"], REJECT_REASON: ["odd"]}))
    assert is_label(old.schema.field(REJECT_REASON).type) and old.column("_reject_detail").to_pylist() == [None]
    both = concat_tables([rej, old])
    assert reject_counts(both) == {("odd", "odd"): 6, ("big", "big"): 3}
    out = rejects_table(both, "s")
    assert out.schema.field("reason").type == pa.string() and out.column("step").to_pylist()[-1] == "odd"


class ManyReasons(Filter):
    """300 masks, one row each: label indices past one byte (the chain's codes widen)."""

    name = "many"

    def masks(self, batch):
        v = batch.column("v").to_numpy()
        return [(f"r{i}", v == i) for i in range(300)]


class Reasons(Filter):
    """One reason per row, named from `prefix`."""

    def __init__(self, name: str, prefix: str):
        self.name, self.prefix = name, prefix

    def masks(self, batch):
        v = batch.column("v").to_numpy()
        return [(f"{self.prefix}{i}", v == i) for i in range(len(v))]


def test_joined_rejects_count_past_one_byte_of_names():
    """Two chains' rejects fit int8 indices each, not together: joining them must still count."""
    from fusionweave.pipelines.runner import reject_counts
    from fusionweave.transforms.step import concat_tables

    t = pa.table({"v": list(range(100))})
    parts = [StepChain([Reasons("s", p)])(t)[1] for p in ("a", "b")]
    assert all(p.schema.field("_reject_reason").type.index_type == pa.int8() for p in parts)
    both = concat_tables(parts)
    counts = reject_counts(both)
    assert len(counts) == 200 and set(counts.values()) == {1} and counts[("s", "b99")] == 1
    assert both.sort_by("v").column("_reject_reason").cast(pa.string()).to_pylist()[:2] == ["a0", "b0"]


def test_more_than_255_reasons_keep_their_names():
    t = pa.table({"v": list(range(310))})
    kept, rej, stats = StepChain([ManyReasons()])(t)
    assert kept.column("v").to_pylist() == list(range(300, 310))
    assert rej.column("_reject_reason").cast(pa.string()).to_pylist() == [f"r{i}" for i in range(300)]
    assert set(rej.column("_reject_step").cast(pa.string()).to_pylist()) == {"many"}
    assert stats["many"].rejects["r299"] == 1 and sum(stats["many"].rejects.values()) == 300
