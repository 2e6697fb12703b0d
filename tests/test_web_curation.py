"""The web page's curation in Debian's headless Chromium through Playwright, on the real daemon: a duplicates review
("keep this one, trash the others", confirmed), a bulk rating of a selection (read back from the sidecars), the
timeline (month headings, a jump to a year), the colour label in the detail view, and the phone layout at 390×844
(the detail image inside its dialog, the tags inside too, a two-row header). Screenshots go to tests/artifacts/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyexiv2
import pytest
from photos import planted_copies, scene
from served import Served, wait_for
from test_web import artifacts, chromium, ticket

pytestmark = pytest.mark.slow
__all__ = ["chromium"]  # the fixture, from test_web

MONTHS = [(2019, 7), (2021, 3), (2021, 11), (2023, 5)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("webcuration")
    pics = root / "pics"
    pics.mkdir()
    for g in range(2):
        for path in planted_copies(scene(g), pics, f"copy{g}"):
            os.utime(path, (0, _stamp(*MONTHS[g])))
    for n in range(6):
        path = pics / f"photo{n}.jpg"
        scene(200 + n, size=(1600, 1200)).save(path, quality=85)  # big: the phone's detail view must shrink it
        os.utime(path, (0, _stamp(*MONTHS[n % len(MONTHS)])))
    daemon = Served(root, model_dir, [pics])
    daemon.environ["HOME"] = str(root)  # the trash is $XDG_DATA_HOME/Trash on the home's filesystem
    daemon.start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 16, timeout=120, what="the library")
    yield daemon
    daemon.stop()


def _stamp(year: int, month: int) -> int:
    from datetime import UTC, datetime

    return int(datetime(year, month, 15, 12, tzinfo=UTC).timestamp())


def open_page(site: Served, chromium: object, next_url: str, viewport: tuple[int, int] = (1280, 900),
              ) -> tuple[object, list[str]]:
    page = chromium.new_page(viewport={"width": viewport[0], "height": viewport[1]})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(ticket(site, next=next_url))
    return page, errors


def test_a_duplicates_review_keeps_one_and_trashes_the_others(site: Served, chromium: object) -> None:
    page, errors = open_page(site, chromium, "/?view=duplicates")
    try:
        page.wait_for_selector(".dup-group")  # type: ignore[attr-defined]
        assert page.eval_on_selector_all(".dup-group", "g => g.length") == 2  # type: ignore[attr-defined]
        group = page.locator(".dup-group").filter(has_text="copy0.jpg")  # type: ignore[attr-defined]
        assert group.locator(".dup-item").count() == 5 and "keep copy0.jpg" in group.locator("h2").text_content()
        assert group.locator(".dup-item.keeper .name").text_content() == "copy0.jpg"
        page.screenshot(path=str(artifacts() / "web-duplicates.png"))  # type: ignore[attr-defined]
        page.once("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
        group.locator(".dup-item.keeper button.keep").click()
        group.locator(".dup-status", has_text="4 moved to the trash").wait_for()
        trashed = sorted(p.name for p in (site.root / "data" / "Trash" / "files").iterdir())
        assert trashed == sorted(["copy0 copy.jpg", "copy0 copy.jpg.xmp", "copy0-half.jpg", "copy0-half.jpg.xmp",
                                  "copy0-q40.jpg", "copy0-q40.jpg.xmp", "copy0-crop.png", "copy0-crop.png.xmp"])
        assert (site.folders[0] / "copy0.jpg").exists()
        assert len(site.get("/duplicates")["groups"]) == 1
        assert not errors, errors
    finally:
        page.close()  # type: ignore[attr-defined]


def test_a_selection_is_rated_at_once(site: Served, chromium: object) -> None:
    page, errors = open_page(site, chromium, "/?q=photo")
    try:
        page.wait_for_selector(".cell")  # type: ignore[attr-defined]
        page.click("#select")  # type: ignore[attr-defined]
        picked = ["photo1.jpg", "photo2.jpg", "photo3.jpg"]
        for name in picked:
            page.click(f".cell[title$='/{name}']")  # type: ignore[attr-defined]
        assert page.text_content("#bulk-count") == "3 selected"  # type: ignore[attr-defined]
        assert not page.is_visible("#detail[open]")  # type: ignore[attr-defined]  # selecting opens nothing
        page.click("#bulk-rating [data-rating='4']")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.querySelector('#bulk-status').textContent === 'rated 4 on 3 images'")  # type: ignore[attr-defined]
        for name in picked:
            with pyexiv2.Image(str(site.folders[0] / f"{name}.xmp")) as side:
                assert side.read_xmp()["Xmp.xmp.Rating"] == "4"
        found = {Path(h["path"]).name for h in site.get("/search", q="rating:4", k=50)["hits"]}
        assert found == set(picked)
        page.fill("#bulk-keyword", "portfolio")  # type: ignore[attr-defined]
        page.click("#bulk-tag button[value='add']")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.querySelector('#bulk-status').textContent.startsWith('added')")  # type: ignore[attr-defined]
        assert {Path(h["path"]).name for h in site.get("/search", q="tag:portfolio", k=50)["hits"]} == set(picked)
        assert not errors, errors
    finally:
        page.close()  # type: ignore[attr-defined]


def test_the_detail_view_shows_and_sets_the_colour_label(site: Served, chromium: object) -> None:
    image = site.folders[0] / "photo4.jpg"
    image_id = site.listed()[str(image)]
    site.client.request("PATCH", f"/items/{image_id}", body={"label": "Blue"})  # as another program would have set it
    page, errors = open_page(site, chromium, "/?q=photo4")
    try:
        page.wait_for_selector(".cell")  # type: ignore[attr-defined]
        page.click(".cell[title$='/photo4.jpg']")  # type: ignore[attr-defined]
        page.wait_for_selector("#detail[open] #detail-label [data-label='Blue'][aria-pressed='true']")  # type: ignore[attr-defined]
        assert page.eval_on_selector_all("#detail-label [aria-pressed='true']", "b => b.length") == 1  # type: ignore[attr-defined]
        page.click("#detail-label [data-label='Green']")  # type: ignore[attr-defined]
        page.wait_for_selector("#detail-label [data-label='Green'][aria-pressed='true']")  # type: ignore[attr-defined]
        assert page.text_content("#edit-status") == "saved to the sidecar"  # type: ignore[attr-defined]
        with pyexiv2.Image(str(image.with_name(image.name + ".xmp"))) as side:
            assert side.read_xmp()["Xmp.xmp.Label"] == "Green"
        assert [h["id"] for h in site.get("/search", q="label:green", k=50)["hits"]] == [image_id]
        page.screenshot(path=str(artifacts() / "web-label.png"))  # type: ignore[attr-defined]
        page.click("#detail-label [data-label='Green']")  # type: ignore[attr-defined]  # the same one again: removed
        page.wait_for_function("() => !document.querySelector('#detail-label [aria-pressed=\"true\"]')")  # type: ignore[attr-defined]
        wait_for(lambda: site.get(f"/items/{image_id}")["label"] is None, what="the label removed")
        with pyexiv2.Image(str(image.with_name(image.name + ".xmp"))) as side:
            assert "Xmp.xmp.Label" not in side.read_xmp()
        assert not errors, errors
    finally:
        page.close()  # type: ignore[attr-defined]


def test_the_timeline_has_month_headings_and_jumps_to_a_year(site: Served, chromium: object) -> None:
    page, errors = open_page(site, chromium, "/?view=timeline", viewport=(700, 360))  # low: the page must scroll
    try:
        page.wait_for_selector(".month")  # type: ignore[attr-defined]
        headings = page.eval_on_selector_all(".month h2", "h => h.map(x => x.textContent)")  # type: ignore[attr-defined]
        assert headings[0] == "May 2023" and "March 2021" in headings and headings[-1] == "July 2019"
        years = page.eval_on_selector_all("#years button", "b => b.map(x => x.textContent)")  # type: ignore[attr-defined]
        assert years == ["2023", "2021", "2019"]
        page.click("#years [data-year='2019']")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.querySelector('#scroller').scrollTop > 0")  # type: ignore[attr-defined]
        assert not errors, errors
    finally:
        page.close()  # type: ignore[attr-defined]


def test_on_a_phone_the_detail_image_and_tags_stay_inside_the_dialog(site: Served, chromium: object) -> None:
    page, errors = open_page(site, chromium, "/?q=photo0", viewport=(390, 844))
    try:
        header = page.eval_on_selector("header", "h => h.getBoundingClientRect().height")  # type: ignore[attr-defined]
        row = page.eval_on_selector("#q", "q => q.getBoundingClientRect().height")  # type: ignore[attr-defined]
        assert header < 2 * row + 40, f"the header is {header}px high: more than two rows"
        page.wait_for_selector(".cell")  # type: ignore[attr-defined]
        page.click(".cell[title$='/photo0.jpg']")  # type: ignore[attr-defined]
        page.wait_for_selector("#detail[open]")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.querySelector('#detail-image').naturalWidth > 0")  # type: ignore[attr-defined]
        box = page.eval_on_selector("#detail", "d => d.getBoundingClientRect().toJSON()")  # type: ignore[attr-defined]
        image = page.eval_on_selector("#detail-image", "i => i.getBoundingClientRect().toJSON()")  # type: ignore[attr-defined]
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert box["x"] <= image["x"] and image["x"] + image["width"] <= box["x"] + box["width"], (image, box)
        boxes = "t => t.map(x => x.getBoundingClientRect().toJSON())"
        for tag in page.eval_on_selector_all("#detail-tags .tag, #detail-rating button, #detail-label button", boxes):  # type: ignore[attr-defined]
            assert box["x"] <= tag["x"] and tag["x"] + tag["width"] <= box["x"] + box["width"], (tag, box)
        assert page.eval_on_selector("#detail", "d => d.scrollWidth <= d.clientWidth")  # type: ignore[attr-defined]
        page.click("#detail-rating [data-rating='5']")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.querySelector('#edit-status').textContent === 'saved to the sidecar'")  # type: ignore[attr-defined]
        assert page.get_attribute("#detail-rating [data-rating='5']", "aria-pressed") == "true"  # type: ignore[attr-defined]
        page.screenshot(path=str(artifacts() / "web-phone-detail.png"))  # type: ignore[attr-defined]
        assert not errors, errors
    finally:
        page.close()  # type: ignore[attr-defined]
