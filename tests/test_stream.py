"""Streaming loaders: equal batch counts across ranks with uneven shards, exact mid-epoch
resume, mixture ratios and their resume, corrupt members and broken tars skipped and counted,
and the Ray Data path over the same shards."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from fusionweave.pipelines.storage.shard_sink import write_shard
from fusionweave.trainers.shard_plan import collection_order, plan_epoch, shard_counts
from fusionweave.trainers.stream import Mixture, ResumableLoader, ShardStream, ray_batches


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (i % 256, (i * 7) % 256, 3)).save(buf, "PNG")
    return buf.getvalue()


def make_shards(folder: Path, sizes: list[int], prefix: str = "k") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for s, size in enumerate(sizes):
        write_shard(folder / f"shard-{s:06d}.tar",
                    [{"__key__": f"{prefix}{n + i:04d}", "png": png(n + i), "cls": str(n + i), "txt": f"t{n + i}"}
                     for i in range(size)])
        n += size
    return sorted(str(p) for p in folder.glob("*.tar"))


def keys(batches: list) -> list[str]:
    return [k for b in batches for k in b["__key__"]]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_shards(tmp_path_factory.mktemp("stream"), [7, 13, 5, 20, 3, 11])


@pytest.mark.parametrize("workers", [0, 2])
def test_every_rank_gets_the_same_number_of_batches(shards: list[str], workers: int) -> None:
    loaders = [ResumableLoader(ShardStream(shards, 4, rank=r, world_size=2, workers=workers, seed=1,
                                           shuffle_buffer=8)) for r in range(2)]
    got = [list(ld) for ld in loaders]
    assert len(got[0]) == len(got[1]) == len(loaders[0]) == len(loaders[1]) > 0
    for batches in got:
        assert all(b["png"].shape == (4, 3, 8, 8) and len(b["txt"]) == 4 for b in batches)
    k0, k1 = keys(got[0]), keys(got[1])
    assert not set(k0) & set(k1) and len(set(k0)) == len(k0)  # no sample twice in an epoch
    assert all(int(t[1:]) == int(k[1:]) for b in got[0] for t, k in zip(b["txt"], b["__key__"]))


def test_plan_balances_uneven_shards() -> None:
    from fusionweave.trainers.shard_plan import Shard

    plan = plan_epoch([Shard(f"s{i}", n) for i, n in enumerate([100, 1, 1, 1, 50, 49])], 2, 1, 10, 0, 0)
    assert sorted(sum(s.count for s in r[0].shards) for r in plan) == [101, 101]
    assert plan[0][0].batches == plan[1][0].batches == 10
    assert collection_order([2, 1, 3]) == [0, 1, 2, 0, 2, 2]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_exactly_the_rest(shards: list[str], workers: int) -> None:
    def loader() -> ResumableLoader:
        return ResumableLoader(ShardStream(shards, 3, workers=workers, seed=5, shuffle_buffer=10))

    full = keys(list(loader()))
    first = loader()
    taken = []
    for i, b in enumerate(first):
        taken.append(b)
        if i == 4:
            break
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 5}
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert keys(taken) + keys(rest) == full
    assert resumed.state_dict() == {"epoch": 1, "batches": 0}
    assert keys(list(resumed)) != full  # the next epoch reshuffles


def test_mixture_ratio_and_resume(tmp_path: Path) -> None:
    a = make_shards(tmp_path / "a", [10, 10], "a")
    b = make_shards(tmp_path / "b", [6], "b")

    def mixture() -> Mixture:
        return Mixture([ResumableLoader(ShardStream(a, 2, seed=0, shuffle_buffer=4)),
                        ResumableLoader(ShardStream(b, 2, seed=0, shuffle_buffer=4))], [3, 1], seed=9)

    m = mixture()
    it = iter(m)
    draws = [next(it) for _ in range(400)]
    share = sum(1 for i, _ in draws if i == 0) / 400
    assert abs(share - 0.75) < 0.06
    assert all(k.startswith("a" if i == 0 else "b") for i, batch in draws for k in batch["__key__"])
    m2 = mixture()
    it2 = iter(m2)
    for _ in range(37):
        next(it2)
    state = m2.state_dict()
    m3 = mixture()
    m3.load_state_dict(state)
    it3 = iter(m3)
    for want, got in zip([next(it2) for _ in range(20)], [next(it3) for _ in range(20)]):
        assert want[0] == got[0] and want[1]["__key__"] == got[1]["__key__"]


def test_corrupt_members_and_broken_tars_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    make_shards(folder, [6, 6])
    write_shard(folder / "shard-000002.tar", [{"__key__": "bad0", "png": b"\x89PNG not really", "cls": "1"},
                                              {"__key__": "ok0", "png": png(1), "cls": "2", "txt": "x"}])
    broken = folder / "shard-000003.tar"
    write_shard(broken, [{"__key__": f"z{i}", "png": png(i), "cls": "3", "txt": "y"} for i in range(4)])
    broken.write_bytes(broken.read_bytes()[:1800])
    paths = sorted(str(p) for p in folder.glob("*.tar"))
    stream = ShardStream(paths, 2, shuffle_buffer=1)
    loader = ResumableLoader(stream)
    got = keys(list(loader))
    assert "bad0" not in got and "ok0" in got
    assert stream.errors["corrupt_sample"] >= 1
    assert any(k.startswith("broken_tar") for k in stream.errors)
    assert len(got) == 2 * len(loader)


def test_counts_come_from_the_manifest_or_the_tar(shards: list[str], tmp_path: Path) -> None:
    assert [s.count for s in shard_counts(shards)] == [7, 13, 5, 20, 3, 11]
    # any URL webdataset opens: here a pipe: command
    piped = [f"pipe:cat {p}" for p in shards[:2]]
    assert [s.count for s in shard_counts(piped)] == [7, 13]
    got = keys(list(ResumableLoader(ShardStream(piped, 4, shuffle_buffer=0))))
    assert len(got) == 20 and got[0] == "k0000"
    with pytest.raises(FileNotFoundError):
        shard_counts([tmp_path])


def test_ray_data_path_reads_the_same_shards(shards: list[str], engine) -> None:
    rows = sum(len(b["__key__"]) for b in ray_batches(shards, 16))
    assert rows == 59


def test_workers_started_with_spawn(shards: list[str]) -> None:
    """The dataset pickles, so DataLoader workers also start where fork is not the default."""
    ld = ResumableLoader(ShardStream(shards[:2], 4, workers=2, shuffle_buffer=0), multiprocessing_context="spawn")
    assert sum(len(b["__key__"]) for b in ld) == 4 * len(ld) == 16  # workers hold 13 and 7: 3 + 1 batches
