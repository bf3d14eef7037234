"""Bad parquet and broken shards become recorded rejects; the build finishes and balances."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.curate import metadata, validate
from fusionweave.pipelines.storage.shard_sink import write_shard
from tests.conftest import curate_cfg
from tests.helpers import all_rejects


def test_bad_parquet_inputs_are_rejects(engine, tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({
        "url": ["http://127.0.0.1:1/a.jpg", "http://127.0.0.1:1/b.jpg", "http://127.0.0.1:1/c.jpg",
                "http://127.0.0.1:1/d.jpg"],
        "caption": pa.array([b"fine", b"caf\xe9 \xff\xfe", b"x" * 100_000, None], pa.binary()),
        "WIDTH": [float("nan"), None, 800.0, 800.0],
        "HEIGHT": [600.0, 600.0, 800.0, 800.0],
    }), good)
    no_url = tmp_path / "no_url.parquet"
    pq.write_table(pa.table({"TEXT": ["a", "b", "c"]}), no_url)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    cfg = curate_cfg([good, no_url, corrupt])
    st = metadata.run(cfg, tmp_path / "out", engine)
    assert st["rows_in"] == 4 + 3 + 1
    assert st["rows_in"] == st["rows_out"] + st["rejected"]
    assert st["rejects_by_reason"] == {"missing_columns": 3, "unreadable_parquet": 1, "caption_too_long": 1,
                                       "empty_caption": 1}
    kept = pq.read_table(tmp_path / "out" / "metadata" / "shard-000000.parquet")
    assert kept.column("caption").to_pylist()[0] == "fine"
    assert kept.column("caption").to_pylist()[1].startswith("caf")
    rej = all_rejects(tmp_path / "out", "metadata")
    assert any("url" in (d or "") for d in rej.column("detail").to_pylist())


def test_truncated_and_hostile_input_shards(engine, tmp_path):
    """A truncated tar and a tar with `../x` / `/etc/x` members in the validate stage's input."""
    import io

    from PIL import Image

    def jpg(seed: int) -> bytes:
        import numpy as np

        arr = np.random.default_rng(seed).integers(0, 255, (480, 500, 3), dtype=np.uint8)
        b = io.BytesIO()
        Image.fromarray(arr).save(b, format="JPEG")
        return b.getvalue()

    def sample(i: int) -> dict:
        return {"__key__": f"k{i:04d}", "jpg": jpg(i), "txt": f"c{i}",
                "json": {"key": f"k{i:04d}", "ord": i, "url": f"http://h/{i}.jpg"}}

    src = tmp_path / "download"
    src.mkdir()
    write_shard(src / "shard-000000.tar", [sample(i) for i in range(10)])
    data = (src / "shard-000000.tar").read_bytes()
    (src / "shard-000000.tar").write_bytes(data[: int(len(data) * 0.6)])
    import tarfile

    with tarfile.open(src / "shard-000001.tar", "w") as tf:
        for name, payload in [("k0100.jpg", jpg(100)), ("k0100.json", json.dumps({"ord": 100}).encode()),
                              ("../x.jpg", b"evil"), ("/etc/x.jpg", b"evil"), ("k0101.jpg", jpg(101)),
                              ("k0101.json", b"{not json")]:
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload))
    parts = [{"part": "000000", "input": str(src / "shard-000000.tar"), "expected": 10},
             {"part": "000001", "input": str(src / "shard-000001.tar"), "expected": 4}]
    cfg = curate_cfg([tmp_path], validate__near_dup=False)
    st = validate.run(cfg, tmp_path / "out", engine, parts=parts)
    assert st["rows_in"] == st["rows_out"] + st["rejected"]
    reasons = st["rejects_by_reason"]
    assert reasons["unsafe_member_name"] == 2 and reasons["malformed_json"] == 1
    assert reasons["broken_tar"] >= 1
    assert 1 <= st["rows_out"] < 7
    # the truncated shard's lost samples are counted against the upstream count of 10
    part0 = [json.loads(x) for x in (tmp_path / "out" / "validate" / "_manifest.jsonl").read_text().splitlines()][0]
    assert part0["rows_in"] == 10
    assert StageFolder(tmp_path / "out", "validate").is_complete()
