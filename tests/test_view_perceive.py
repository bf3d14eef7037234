"""`fusionweave view` and `trace` on a real perceive build (the perceive e2e test's, with its
tiny models and real RapidOCR) with a densefusion build (priors-template captioner) on top of it,
in the same build folder: in a real browser the funnel shows report.json's counts and a caption
page draws exactly as many boxes as the sample's experts.json holds; trace lists every stage."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli
from tests.test_view_browser import browser, shots  # noqa: F401 - skipped with the reason when no Chromium

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def captioned(perceive_reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the perceive e2e test's build (made once a session, tests/builds.py; it stays
    as built) with the densefusion build made on top of it."""
    reference = tmp_path_factory.mktemp("captioned") / "out"
    shutil.copytree(perceive_reference, reference)
    cfg = reference.parent / "densefusion.yaml"
    cfg.write_text(yaml.safe_dump({"seed": 0, "densefusion": {"chunk_size": 4, "captioner": {"kind": "priors-template"}}}))
    r = cli("build", "densefusion", "--config", str(cfg), "--out", str(reference), "--no-progress", "--num-cpus", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    return reference


def box_count(experts: dict) -> int:
    return sum(1 for name in ("detector", "ovd", "ocr")
               for r in (experts["experts"].get(name) or {}).get("results") or [] if len(r.get("box") or []) == 4)


def test_trace_lists_every_stage_and_the_rejects(captioned: Path) -> None:
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.trace import trace

    view = open_build(captioned)
    assert view.stages[:2] == ["perceive", "caption"]
    key = next(iter(view.key_map("caption")))
    t = trace(view, key)
    assert [s["status"] for s in t["stages"] if s["stage"] in ("perceive", "caption")] == ["kept", "kept"]
    assert t["caption"].startswith("[priors-template caption") and "OPEN DATA" in json.dumps(t["experts"]["ocr"])
    for r in view.rejects("perceive"):
        if not r["key"] or "#missing" in r["key"]:
            continue
        t = trace(view, r["key"])
        assert (t["rejected"]["stage"], t["rejected"]["step"], t["rejected"]["reason"]) == ("perceive", r["step"], r["reason"])


def test_funnel_and_caption_page_in_a_browser(captioned: Path, browser, shots) -> None:  # noqa: F811
    from fusionweave.datasets_cards.view.reader import open_build
    from tests.test_view_browser import funnel_counts, loaded, new_page, report_counts, serving

    view = open_build(captioned)
    srv, url = serving(captioned)
    try:
        page, dialogs = new_page(browser)
        page.goto(url + "/")
        assert funnel_counts(page) == report_counts(captioned)
        page.screenshot(path=str(shots / "densefusion_funnel.png"), full_page=True)
        for key in list(view.key_map("caption"))[:3]:
            experts = view.sample("perceive", key)["experts"]
            page.goto(f"{url}/sample/caption/{key}.html")
            assert page.locator("svg#boxes rect.box").count() == box_count(experts), key
            assert all(w > 0 for w in loaded(page, "#image, #depth"))
            assert "OPEN" in page.locator("#ocr").inner_text()
            assert page.locator("#caption mark.prior").count() > 0 and "Tags:" in page.locator("#prompt").inner_text()
        page.screenshot(path=str(shots / "densefusion_sample.png"), full_page=True)
        assert dialogs == []
        page.close()
    finally:
        srv.shutdown()
        srv.server_close()
