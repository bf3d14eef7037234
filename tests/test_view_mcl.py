"""`fusionweave view` and `trace` on the MCL e2e test's build (all five modalities, planted bad
inputs): in a real browser, a video's frames, an audio clip's spectrogram, a point cloud's 3-D
scatter turned by its slider and a depth map beside its RGB all render; every planted reject is
traced to its step and reason."""
from __future__ import annotations

import pytest

from tests.test_view_browser import browser, shots  # noqa: F401 - skipped with the reason when no Chromium

pytestmark = pytest.mark.heavy


@pytest.fixture
def built(mcl_built):
    """The MCL e2e test's build, made once a session (tests/builds.py); read only."""
    return mcl_built


def by_modality(out) -> dict[str, str]:
    from fusionweave.datasets_cards.view.reader import open_build

    view = open_build(out)
    found: dict[str, str] = {}
    for key, _ in view.iter_samples("mcl"):
        found.setdefault(view.sample("mcl", key)["json"]["modality"], key)
    return found


def test_trace_mcl_rejects_and_kept(built) -> None:  # noqa: F811
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.trace import trace

    view = open_build(built["out"])
    rows = view.rejects("mcl")
    assert rows
    steps = list(view.stats["mcl"]["steps"])
    for r in rows:
        t = trace(view, r["key"])
        mcl = t["stages"][0]
        if mcl["status"] == "kept":  # a cross-split duplicate can share its key with the kept row
            assert r["reason"] in {x["reason"] for x in mcl["rows_rejected"]}
            continue
        assert (mcl["step"], mcl["reason"], mcl["detail"]) == (r["step"], r["reason"], r["detail"])
        assert mcl["passed"] == steps[:steps.index(r["step"])]
    for modality, key in by_modality(built["out"]).items():
        t = trace(view, key)
        assert t["stages"][0]["status"] == "kept" and t["stages"][0]["values"]["modality"] == modality
        assert t["source"]["rows"], modality  # the annotation row(s) it was built from


def test_mcl_pages_in_a_browser(built, browser, shots) -> None:  # noqa: F811
    from tests.test_view_browser import loaded, new_page, serving

    keys = by_modality(built["out"])
    assert set(keys) == {"image", "video", "audio", "depth", "pointcloud"}
    srv, url = serving(built["out"])
    try:
        page, dialogs = new_page(browser)
        page.goto(f"{url}/sample/mcl/{keys['video']}.html")
        frames = loaded(page, "#frames img.frame")
        assert len(frames) >= 2 and all(w > 0 for w in frames)
        page.screenshot(path=str(shots / "e2e_mcl_video.png"), full_page=True)
        page.goto(f"{url}/sample/mcl/{keys['audio']}.html")
        assert all(w > 0 for w in loaded(page, "#spectrogram"))
        page.screenshot(path=str(shots / "e2e_mcl_audio.png"), full_page=True)
        page.goto(f"{url}/sample/mcl/{keys['pointcloud']}.html")
        assert all(w > 0 for w in loaded(page, "#scatter3d img.view3d"))
        page.locator("#azimuth").fill("4")
        assert [i.get_attribute("data-azim") for i in page.locator("#scatter3d img.view3d").all()
                if i.is_visible()] == ["180"]
        page.screenshot(path=str(shots / "e2e_mcl_pointcloud.png"), full_page=True)
        page.goto(f"{url}/sample/mcl/{keys['depth']}.html")
        assert all(w > 0 for w in loaded(page, "#image, #depth"))
        page.screenshot(path=str(shots / "e2e_mcl_depth.png"), full_page=True)
        page.goto(f"{url}/sample/mcl/{keys['image']}.html")
        assert all(w > 0 for w in loaded(page, "#image")) and page.locator("#answers li").count() >= 1
        assert dialogs == []
        page.close()
    finally:
        srv.shutdown()
        srv.server_close()
