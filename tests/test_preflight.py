"""With more than one node, a build first checks on every node that it sees the inputs and can
write the build folder; a node that cannot stops the build before any work, named."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ray.cluster_utils import Cluster
    from fusionweave.orchestration.ray_engine import RayEngine
    from fusionweave.pipelines.errors import BuildSetupError

    root = Path(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    eng = RayEngine(address=cluster.address, progress=False)
    try:
        eng.preflight([root / "in"], root / "out")
        print("ok")
        for reads, out in (([root / "nowhere"], root / "out"), ([root / "in"], root / "a-file" / "out")):
            try:
                eng.preflight(reads, out)
                print("passed")
            except BuildSetupError as err:
                print("refused:", err)
    finally:
        eng.stop()
        cluster.shutdown()
""")


@pytest.mark.heavy
def test_preflight_on_two_nodes(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "a-file").write_text("x")
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "RAY_ADDRESS": ""})
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(("ok", "passed", "refused"))]
    assert lines[0] == "ok", res.stdout + res.stderr
    assert lines[1].startswith("refused: node ") and f"cannot see {tmp_path / 'nowhere'}" in lines[1]
    assert lines[2].startswith("refused: node ") and f"cannot write and read {tmp_path / 'a-file' / 'out'}" in lines[2]
    assert not list((tmp_path / "out").glob(".preflight-*"))  # the probes are removed
