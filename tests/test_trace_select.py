"""`fusionweave trace` on the select build of the e2e test: each planted copy is a semantic
duplicate of its original, traced to select/semdedup with the cosine and the key it was compared
to; undecodable images stop at embed; a kept sample lists embed, cluster and select with its
cluster and distance to the centroid."""
from __future__ import annotations

import pytest

from tests.builds import SELECT_STAGES as STAGES
from tests.test_view_browser import browser, shots  # noqa: F401 - skipped with the reason when no Chromium

pytestmark = pytest.mark.heavy


@pytest.fixture
def data(select_data):
    return select_data


@pytest.fixture
def reference(select_reference):
    """The select e2e test's build, made once a session (tests/builds.py); read only."""
    return select_reference


def test_planted_copies_and_bad_images(data, reference) -> None:  # noqa: F811
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.trace import trace

    view = open_build(reference)
    assert view.stages == STAGES
    embed_rejects = {r["key"] for r in view.rejects("embed")}
    for copy, original in data["planted"].items():
        if copy in embed_rejects:
            continue
        t = trace(view, copy)
        sel = t["stages"][2]
        assert (sel["status"], sel["step"], sel["reason"]) == ("rejected", "semdedup", "semantic_duplicate")
        assert sel["tested"]["compared_to"] == original and 0.99 <= sel["tested"]["cosine"] <= 1.0
        assert [s["status"] for s in t["stages"][:2]] == ["kept", "kept"]
        assert isinstance(t["stages"][1]["values"]["cluster"], int)
    for key, reason in (("corrupt", "undecodable"), ("no-image", "missing_image")):
        t = trace(view, key)
        assert t["rejected"]["stage"] == "embed" and t["rejected"]["reason"] == reason
        assert [s["status"] for s in t["stages"][1:]] == ["not reached", "not reached"]
    kept = next(iter(view.key_map("select")))
    t = trace(view, kept)
    assert [s["status"] for s in t["stages"]] == ["kept"] * 3 and t["rejected"] is None
    assert t["stages"][2]["values"]["select"]["cluster"] == t["stages"][1]["values"]["cluster"]
    assert t["source"]["url"] == f"http://example.test/{kept}"


def test_clusters_page_in_a_browser(data, reference, browser, shots) -> None:  # noqa: F811
    """Each planted copy is shown as a semantic duplicate, with its cosine, beside its cluster's
    selected items; every image loads."""
    from tests.test_view_browser import loaded, new_page, serving

    srv, url = serving(reference)
    try:
        page, _ = new_page(browser)
        page.goto(url + "/clusters.html")
        dups = page.eval_on_selector_all(".card.duplicate", "els => els.map(e => [e.dataset.key, e.innerText])")
        from fusionweave.datasets_cards.view.reader import open_build

        expected = {r["key"] for r in open_build(reference).rejects("select", reason="semantic_duplicate")}
        assert {k for k, _ in dups} == expected and all("cosine 0.9" in t or "cosine 1" in t for _, t in dups)
        assert page.locator(".card.selected").count() > 0
        assert all(w > 0 for w in loaded(page, "img"))
        page.screenshot(path=str(shots / "select_clusters.png"), full_page=True)
        page.close()
    finally:
        srv.shutdown()
        srv.server_close()
