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


def test_more_than_255_reasons_keep_their_names():
    t = pa.table({"v": list(range(1200))})
    kept, rej, stats = StepChain([Residue()])(t)
    assert kept.column("v").to_pylist() == [0, 600]
    assert rej.num_rows == 1198
    assert rej.column("_reject_reason").to_pylist() == [f"r{v}" for v in rej.column("v").to_pylist()]
    assert set(rej.column("_reject_step").to_pylist()) == {"residue"}
    assert len(stats["residue"].rejects) == 1198 and stats["residue"].rows_out == 2
