"""Foreign tars (img2dataset, hand-made) at the edges of a build: a key that comes back later in
the same tar, link members, and compressed shards. Each is a reject with its reason or a read
sample, never a silent loss: the reader directly, then the select build through the CLI."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from fusionweave.pipelines.select.inputs import InputError, plan_parts
from fusionweave.pipelines.storage.shard_source import (SHARD_SUFFIXES, Broken, ImageSample, Sample, iter_image_samples,
                                                iter_shard, shards_in)
from fusionweave.trainers.shard_plan import shard_counts
from tests.helpers import all_rejects, cli

SECRET = b"never read through a link"
Member = tuple[str, bytes | None, str]  # name, data (None: a link), link type ("" for a regular file)


def jpeg(seed: int) -> bytes:
    img = Image.new("RGB", (64, 64), ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    img.paste((255 - (seed * 67) % 256, 40, 200), (seed % 40, 8, seed % 40 + 20, 40))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def regular(key: str, seed: int) -> list[Member]:
    return [(f"{key}.jpg", jpeg(seed), ""), (f"{key}.txt", f"caption {key}".encode(), ""),
            (f"{key}.json", json.dumps({"key": key}).encode(), "")]


def write_tar(path: Path, members: list[Member], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.SYMTYPE if link.startswith("/") else tarfile.LNKTYPE
                info.linkname = link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def duplicate_key_members() -> list[Member]:
    """`a` is a sample, then `b`, then `a` again with another image: not adjacent, so not one sample."""
    return regular("a", 1) + regular("b", 2) + regular("a", 3)


def link_members(secret: Path) -> list[Member]:
    """`lonely` is only a symlink (to a file outside the tar); `mixed` has a hardlink beside its image."""
    return (regular("c", 4) + [("lonely.jpg", None, str(secret))]
            + [("mixed.jpg", jpeg(5), ""), ("mixed.txt", None, "c.txt")] + regular("d", 6))


def compressed_mode(suffix: str) -> str:
    return {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}[suffix]


def rejects_by_key(items: list) -> dict[str, str]:
    return {i["key"]: i["reason"] for i in items if isinstance(i, dict)}


# ---- the reader -----------------------------------------------------------------------------

def test_reader_rejects_a_key_seen_earlier_and_keeps_the_first(tmp_path: Path) -> None:
    p = write_tar(tmp_path / "dup.tar", duplicate_key_members())
    items = list(iter_shard(p))
    assert [(i.key, type(i).__name__) for i in items] == [("a", "Sample"), ("b", "Sample"), ("a", "Broken")]
    assert items[2].reason == "duplicate_key" and items[0].members["jpg"] == jpeg(1)  # the first is kept
    rows = list(iter_image_samples(p))
    assert len(rows) == 3 and rejects_by_key(rows) == {"a": "duplicate_key"}
    assert [r.key for r in rows if isinstance(r, ImageSample)] == ["a", "b"]


def test_reader_rejects_every_sample_holding_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(SECRET)
    p = write_tar(tmp_path / "links.tar", link_members(secret))
    items = list(iter_shard(p))
    assert [i.key for i in items] == ["c", "lonely", "mixed", "d"]
    broken = {i.key: i for i in items if isinstance(i, Broken)}
    assert {k: b.reason for k, b in broken.items()} == {"lonely": "link_member", "mixed": "link_member"}
    assert "symlink" in broken["lonely"].detail and "hardlink" in broken["mixed"].detail
    assert all(SECRET not in d for i in items if isinstance(i, Sample) for d in i.members.values())
    assert rejects_by_key(list(iter_image_samples(p))) == {"lonely": "link_member", "mixed": "link_member"}


def test_reader_refuses_devices_and_skips_folders(tmp_path: Path) -> None:
    p = tmp_path / "odd.tar"
    with tarfile.open(p, "w") as tf:
        for name, kind in [("dir", tarfile.DIRTYPE), ("fifo.jpg", tarfile.FIFOTYPE)]:
            info = tarfile.TarInfo(name)
            info.type = kind
            tf.addfile(info)
    assert [(i.key, i.reason) for i in iter_shard(p)] == [("fifo", "special_member")]


@pytest.mark.parametrize("suffix", SHARD_SUFFIXES)
def test_compressed_shards_are_read_and_listed_alike(tmp_path: Path, suffix: str) -> None:
    members = regular("e", 7) + regular("f", 8)
    plain = write_tar(tmp_path / "plain.tar", members)
    folder = tmp_path / "in"
    folder.mkdir()
    packed = write_tar(folder / f"shard-000000{suffix}", members, compressed_mode(suffix))
    (folder / "notes.txt").write_text("not a shard")
    assert shards_in(folder) == [packed]
    assert [p["input"] for p in plan_parts([folder])] == [p["input"] for p in plan_parts([packed])] == [str(packed)]
    assert list(iter_shard(packed)) == list(iter_shard(plain))
    assert [(s.url, s.count) for s in shard_counts([folder])] == [(str(packed), 2)]


def test_a_compression_that_is_not_read_is_refused_alone_and_in_a_folder(tmp_path: Path) -> None:
    zst = tmp_path / "shard-000000.tar.zst"
    zst.write_bytes(b"(\xb5/\xfd not read here")
    write_tar(tmp_path / ".shard-000001.tar.tmp-1-ab", [])  # an interrupted write's temporary: not a shard
    for given in (tmp_path, zst):
        with pytest.raises(InputError, match=r"shard-000000.tar.zst: compressed as 'zst', which is not read"):
            plan_parts([given])


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_tar_cut_at_a_member_boundary_is_a_broken_tar(tmp_path: Path, suffix: str) -> None:
    """tarfile alone ends quietly where a header is missing: the tail would vanish unreported."""
    whole = write_tar(tmp_path / "whole.tar", [m for i in range(6) for m in regular(f"k{i}", i)])
    with tarfile.open(whole) as tf:
        cut = tf.getmembers()[9].offset  # the header of k3.jpg: k0..k2 are whole
    data = whole.read_bytes()[:cut]
    p = tmp_path / f"cut{suffix}"
    p.write_bytes(gzip.compress(data) if suffix == ".tar.gz" else data)
    rows = list(iter_image_samples(p, expected=6))
    assert [r.key for r in rows if isinstance(r, ImageSample)] == ["k0", "k1"]  # k2 was open when it broke
    assert len(rows) == 6 and all(r["reason"] == "broken_tar" for r in rows if isinstance(r, dict))


# ---- the select build through the CLI ---------------------------------------------------------

@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One select build over a folder holding each case (duplicate key, links, a .tar.gz) plus a
    .tgz listed as a file, with a tiny random CLIP."""
    from fusionweave.experts.tiny_models import make_tiny_clip

    root = tmp_path_factory.mktemp("foreign-tars")
    secret = root / "secret.jpg"
    secret.write_bytes(SECRET)
    folder = root / "shards"
    folder.mkdir()
    write_tar(folder / "dup.tar", duplicate_key_members())
    write_tar(folder / "links.tar", link_members(secret))
    write_tar(folder / "packed.tar.gz", regular("g", 9) + regular("h", 10), "w:gz")
    (root / "elsewhere").mkdir()
    listed = write_tar(root / "elsewhere" / "listed.tgz", regular("i", 11), "w:gz")
    cfg = {"input": [str(folder), str(listed)], "embed": {"model": str(make_tiny_clip(root / "clip")), "batch_size": 4},
           "cluster": {"clusters": 2, "niter": 5}, "semdedup": {"eps": 0.0001}, "top_n": {"n": None}}
    recipe = root / "select.yaml"
    recipe.write_text(yaml.safe_dump({"seed": 0, "select": cfg}))
    out = root / "out"
    r = cli("build", "select", "--config", str(recipe), "--out", str(out), "--no-progress", "--num-cpus", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    verified = cli("verify", str(out))
    stats = {s: json.loads((out / s / "_stats.json").read_text()) for s in ("embed", "cluster", "select")}
    rejects = all_rejects(out, "embed").to_pylist()
    embedded = [k for f in sorted((out / "embed").glob("shard-*.parquet")) for k in pq.read_table(f)["key"].to_pylist()]
    return {"out": out, "verify": verified, "stats": stats, "rejects": rejects, "embedded": embedded}


def assert_sound(build: dict) -> None:
    """Every stage balances, the embed stage read every sample planted (3 + 4 + 2 + 1), and verify passes."""
    for stage, st in build["stats"].items():
        assert st["rows_in"] == st["rows_out"] + st["rejected"], stage
    assert build["stats"]["embed"]["rows_in"] == 10
    assert build["verify"].returncode == 0, build["verify"].stdout + build["verify"].stderr


def embed_rejects(build: dict, reason: str) -> list[str]:
    return sorted(r["key"] for r in build["rejects"] if r["reason"] == reason)


@pytest.mark.heavy
def test_cli_duplicate_key_is_one_reject(build: dict) -> None:
    assert embed_rejects(build, "duplicate_key") == ["a"]
    assert build["embedded"].count("a") == 1 and len(build["embedded"]) == len(set(build["embedded"]))
    assert_sound(build)


@pytest.mark.heavy
def test_cli_link_members_reject_their_samples(build: dict) -> None:
    assert embed_rejects(build, "link_member") == ["lonely", "mixed"]
    assert not {"lonely", "mixed"} & set(build["embedded"]) and {"c", "d"} <= set(build["embedded"])
    assert_sound(build)


@pytest.mark.heavy
def test_cli_compressed_shards_read_from_a_folder_and_as_files(build: dict) -> None:
    assert {"g", "h", "i"} <= set(build["embedded"])
    assert sorted(build["embedded"]) == ["a", "b", "c", "d", "g", "h", "i"]
    assert len(build["rejects"]) == 3  # the duplicate and the two link samples, nothing else
    assert_sound(build)
