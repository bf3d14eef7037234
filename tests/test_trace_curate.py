"""`fusionweave trace` on the curate build of the e2e test (1,000 generated rows with planted bad
cases): every planted reject is traced to the stage, step and reason that dropped it, with the
value tested where the build records one; a kept sample lists every stage."""
from __future__ import annotations

import json

import pytest

from tests.helpers import all_rejects, cli
from tests.builds import CURATE_STAGES as STAGES
from tests.test_view_browser import browser, shots  # noqa: F401 - skipped with the reason when no Chromium

pytestmark = pytest.mark.heavy


@pytest.fixture
def reference(curate_reference):
    """The curate e2e test's build, made once a session (tests/builds.py); read only."""
    return curate_reference


@pytest.fixture(scope="module")
def view(curate_reference):
    from fusionweave.datasets_cards.view.reader import open_build

    return open_build(curate_reference)


def test_every_planted_reject_names_its_step_and_value(view, reference, sample_data) -> None:  # noqa: F811
    from fusionweave.datasets_cards.view.trace import trace

    _, planted, _ = sample_data
    rows = [r for s in STAGES for r in all_rejects(reference, s).to_pylist()]
    by_url: dict[str, list[dict]] = {}
    for r in rows:
        by_url.setdefault(r["url"], []).append(r)
    checked = 0
    for reason, urls in planted.items():
        for url in urls:
            r = next(x for x in by_url[url] if x["reason"] == reason)
            t = trace(view, r["key"])
            if reason == "duplicate_url":  # the same URL, so the same key as the row that was kept
                at = next(s for s in t["stages"] if s["stage"] == r["stage"])
                assert at["status"] == "kept" and t["rejected"] is None
                assert {"step": r["step"], "reason": reason, "detail": r["detail"], "url": url} in at["rows_rejected"]
                checked += 1
                continue
            assert t["rejected"]["stage"] == r["stage"] and t["rejected"]["step"] == r["step"], (reason, t["rejected"])
            assert t["rejected"]["reason"] == reason
            at = next(s for s in t["stages"] if s["stage"] == r["stage"])
            steps = list(view.stats[r["stage"]]["steps"])
            assert at["passed"] == steps[:steps.index(r["step"])]
            later = [s["status"] for s in t["stages"][STAGES.index(r["stage"]) + 1:]]
            assert set(later) <= {"not reached"}
            assert t["source"] is not None and t["source"].get("url", t["source"].get("URL")) in (url, None)
            if reason in ("near_duplicate", "duplicate_sha256", "duplicate_url"):
                other = at["tested"]["compared_to"]
                assert trace(view, other)["rejected"] is None  # what it duplicates was kept
                if reason == "near_duplicate":
                    assert at["tested"]["phash_distance"] <= 10
            if reason == "short_edge_too_small" and r["stage"] == "metadata":
                assert at["tested"]["short_edge"] < 448
            checked += 1
    assert checked == sum(len(u) for u in planted.values())


def test_kept_sample_lists_every_stage(view, reference) -> None:  # noqa: F811
    from fusionweave.datasets_cards.view.trace import trace

    key = next(iter(view.key_map("validate")))
    t = trace(view, key)
    assert [s["stage"] for s in t["stages"]] == STAGES
    assert all(s["status"] == "kept" and s["passed"] == list(view.stats[s["stage"]]["steps"]) for s in t["stages"])
    assert t["stages"][2]["values"]["phash"] and t["source"]["url"].startswith("http://127.0.0.1")
    r = cli("trace", str(reference), key, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["last_stage"] == "validate"


def test_viewer_on_the_curate_build_in_a_browser(reference, browser, shots) -> None:  # noqa: F811
    """The funnel shows report.json's counts; each near duplicate's page shows both images."""
    from tests.test_view_browser import funnel_counts, loaded, new_page, report_counts, serving

    srv, url = serving(reference)
    try:
        page, dialogs = new_page(browser)
        page.goto(url + "/")
        assert funnel_counts(page) == report_counts(reference)
        report = json.loads((reference / "report.json").read_text())
        page.screenshot(path=str(shots / "curate_funnel.png"), full_page=True)
        page.click('a.reason[data-reason="near_duplicate"]')
        page.wait_for_url("**/rejects/validate/near_duplicate.html")
        rows = page.locator("tr.reject")
        assert rows.count() == report["validate"]["rejects_by_reason"]["near_duplicate"]
        for row in rows.all():
            widths = [row.locator(sel).evaluate("e => e.naturalWidth") for sel in ("img.rejected-img", "img.other-img")]
            assert all(w > 0 for w in widths)
        assert all(w > 0 for w in loaded(page, "img"))
        page.screenshot(path=str(shots / "curate_near_duplicates.png"), full_page=True)
        assert dialogs == []
        page.close()
    finally:
        srv.shutdown()
        srv.server_close()
