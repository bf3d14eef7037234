"""The viewer in a real headless Chromium (the system's, driven by Playwright; no browser is
downloaded): the funnel shows report.json's counts, a near duplicate's page shows both images, a
sample page draws as many boxes as experts.json holds and hostile OCR text does not run, an MCL
page renders frames, a spectrogram and a rotatable 3-D scatter, and the static site works from
file://. Skipped, with the reason, where no Chromium is installed (`apt-get install chromium`).

Screenshots of each page go to $FUSIONWEAVE_VIEW_ARTIFACTS (default: pytest's temporary folder,
`view-screenshots`)."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.test_view import experts, make_densefusion_build, make_mcl_build

pytestmark = pytest.mark.heavy

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    env = os.environ.get("FUSIONWEAVE_CHROMIUM")
    if env and Path(env).is_file():
        return env
    return next((p for p in (shutil.which(b) for b in BROWSERS) if p), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    exe = find_browser()
    if exe is None:
        pytest.skip("no Chromium found (looked for " + ", ".join(BROWSERS) + "; apt-get install chromium, "
                    "or set FUSIONWEAVE_CHROMIUM)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        except Exception as err:  # noqa: BLE001 - a browser that does not start is a reason to skip, said
            pytest.skip(f"{exe} did not start under Playwright: {str(err).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ.get("FUSIONWEAVE_VIEW_ARTIFACTS") or tmp_path_factory.getbasetemp() / "view-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("view-browser")
    return {"df": make_densefusion_build(root / "df"), "mcl": make_mcl_build(root / "mcl")}


def serving(out: Path) -> tuple[object, str]:
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.server import make

    srv = make(open_build(out), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_port}"


@pytest.fixture(scope="module")
def df_url(builds: dict) -> Iterator[str]:
    srv, url = serving(builds["df"]["out"])
    yield url
    srv.shutdown()
    srv.server_close()


def new_page(browser: object) -> tuple[object, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    dialogs: list[str] = []

    def on_dialog(d: object) -> None:
        dialogs.append(d.message)  # type: ignore[attr-defined]
        d.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", on_dialog)
    return page, dialogs


def loaded(page: object, selector: str) -> list[int]:
    """naturalWidth of every image matching `selector` once it has loaded (0: broken, or not
    loaded within 20 s). Lazy images are made eager first: offscreen, they would never load."""
    return page.eval_on_selector_all(  # type: ignore[attr-defined]
        selector, "els => Promise.all(els.map(e => { e.loading = 'eager'; return e.complete ? e.naturalWidth : "
                  "new Promise(r => { e.onload = () => r(e.naturalWidth); e.onerror = () => r(0); "
                  "setTimeout(() => r(e.naturalWidth), 20000); }); }))")


def funnel_counts(page: object) -> dict[str, tuple[int, int, int]]:
    """(rows in, out, rejected) per stage as the funnel page shows them."""
    return {r["stage"]: (int(r["in"]), int(r["out"]), int(r["rej"])) for r in page.eval_on_selector_all(  # type: ignore[attr-defined]
        "tr.stage", "els => els.map(e => ({stage: e.dataset.stage, in: e.dataset.rowsIn, out: e.dataset.rowsOut, "
                    "rej: e.dataset.rejected}))")}


def report_counts(out: Path) -> dict[str, tuple[int, int, int]]:
    report = json.loads((out / "report.json").read_text())
    return {s: (v["rows_in"], v["rows_out"], v["rejected"]) for s, v in report.items()}


def test_funnel_shows_report_counts(browser: object, builds: dict, df_url: str, shots: Path) -> None:
    page, _ = new_page(browser)
    page.goto(df_url + "/")
    assert funnel_counts(page) == report_counts(builds["df"]["out"])
    # the visible numbers are those too
    cells = page.locator('tr.stage[data-stage="validate"] td.n').all_inner_texts()
    assert cells == ["8", "6", "2"]
    assert loaded(page, "#funnel-chart") and all(loaded(page, "img"))
    page.screenshot(path=str(shots / "funnel.png"), full_page=True)
    page.close()


def test_near_duplicate_page_shows_both_images(browser: object, builds: dict, df_url: str, shots: Path) -> None:
    page, _ = new_page(browser)
    page.goto(df_url + "/")
    page.click('a.reason[data-reason="near_duplicate"]')
    page.wait_for_url("**/rejects/validate/near_duplicate.html")
    row = page.locator(f'tr.reject[data-key="{builds["df"]["dup"]}"]')
    assert row.count() == 1
    widths = loaded(page, "tr.reject img.rejected-img") + loaded(page, "tr.reject img.other-img")
    assert len(widths) == 2 and all(w > 0 for w in widths)
    page.screenshot(path=str(shots / "near_duplicate.png"), full_page=True)
    page.close()


def test_sample_page_draws_every_box_and_runs_no_hostile_text(browser: object, builds: dict, df_url: str,
                                                             shots: Path) -> None:
    k = builds["df"]["captioned"][1]
    ex = experts(1)["experts"]
    page, dialogs = new_page(browser)
    page.goto(f"{df_url}/sample/caption/{k}.html")
    n = {name: len(ex[name]["results"]) for name in ("detector", "ovd", "ocr")}
    boxes = page.locator("svg#boxes rect.box")
    assert boxes.count() == sum(n.values())
    assert all(b.is_visible() for b in boxes.all())
    assert all(w > 0 for w in loaded(page, "#image, #depth"))
    # the OCR text `<script>...` is shown as text, and nothing ran
    assert '<script>alert("ocr")</script>' in page.locator("#ocr").inner_text()
    assert "<img src=x onerror=alert(1)>" in page.locator("#caption").inner_text()
    assert page.locator("#caption mark.prior-ocr").count() >= 1
    page.screenshot(path=str(shots / "sample.png"), full_page=True)
    page.uncheck('input[data-expert="ocr"]')
    visible = sum(1 for b in boxes.all() if b.is_visible())
    assert visible == n["detector"] + n["ovd"]
    assert dialogs == []
    page.close()


def test_mcl_pages_render_frames_spectrogram_and_3d_scatter(browser: object, builds: dict, shots: Path) -> None:
    srv, url = serving(builds["mcl"]["out"])
    k = builds["mcl"]["keys"]
    try:
        page, _ = new_page(browser)
        page.goto(f"{url}/sample/mcl/{k['video']}.html")
        frames = loaded(page, "#frames img.frame")
        assert len(frames) == 4 and all(w > 0 for w in frames)
        page.screenshot(path=str(shots / "mcl_video.png"), full_page=True)
        page.goto(f"{url}/sample/mcl/{k['audio']}.html")
        assert all(w > 0 for w in loaded(page, "#spectrogram"))
        page.screenshot(path=str(shots / "mcl_audio.png"), full_page=True)
        page.goto(f"{url}/sample/mcl/{k['pointcloud']}.html")
        assert all(w > 0 for w in loaded(page, "#scatter3d img.view3d"))
        shown = lambda: [i.get_attribute("data-azim") for i in page.locator("#scatter3d img.view3d").all()  # noqa: E731
                         if i.is_visible()]
        assert shown() == ["0"]
        page.screenshot(path=str(shots / "mcl_pointcloud.png"), full_page=True)
        page.locator("#azimuth").fill("2")  # the slider turns the cloud
        assert shown() == ["90"]
        page.goto(f"{url}/sample/mcl/{k['depth']}.html")
        assert all(w > 0 for w in loaded(page, "#image, #depth"))
        assert "is it near?" in page.locator("#question").inner_text()
        page.screenshot(path=str(shots / "mcl_depth.png"), full_page=True)
        page.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_static_site_works_from_file_url(browser: object, builds: dict, tmp_path: Path, shots: Path) -> None:
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.static import export

    site = tmp_path / "site"
    export(open_build(builds["df"]["out"]), site)
    page, dialogs = new_page(browser)
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto((site / "index.html").as_uri())
    assert page.locator("tr.stage").count() == 4
    page.click('nav a:text-is("perceive")')
    page.wait_for_url("**/samples/perceive/1.html")
    assert page.locator("#samples .card").count() == 6 and all(w > 0 for w in loaded(page, "#samples img"))
    page.locator("#samples .card a").first.click()
    page.wait_for_url("**/sample/perceive/*.html")
    assert page.locator("svg#boxes rect.box").count() > 0 and all(w > 0 for w in loaded(page, "#image, #depth"))
    page.screenshot(path=str(shots / "static_sample.png"), full_page=True)
    page.click("text=trace")
    page.wait_for_url("**/trace/*.html")
    assert "kept through" in page.locator("#verdict").inner_text()
    assert failed == [] and dialogs == []
    page.close()
