"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``, installed here by the
``chromium`` fixture when it is missing) renders the report of a shortened toy study run, and the test
checks that the page reported no console error, that its tables, plots and images are laid out and
visible, and takes a full-page screenshot.

Set ``FLASHBENCH_SCREENSHOTS=DIR`` to keep the screenshots; ``FLASHBENCH_CHROMIUM`` to use another binary.
"""

from __future__ import annotations

import io
import os
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w

from _browser import VISIBILITY_PROBE, chromium_page, install_chromium, open_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "reports" / "example"


@pytest.fixture(scope="session")
def chromium() -> str:
    path, why = install_chromium()
    if path is None:
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def toy_reports(tmp_path_factory) -> Path:
    """A real run of a shortened ``studies/ablation_guidance.toml`` (toy scale: the toy-digits teacher, 4
    training steps per variant, 16 samples), published with its index into a reports folder."""
    from flashbench.cli import main
    from flashbench.report import publish_reports

    tmp = tmp_path_factory.mktemp("browser")
    data = tomllib.loads((ROOT / "studies" / "ablation_guidance.toml").read_text())
    toy = data["scale"]["toy"]
    toy.update({"iterations": 4, "phase_length": 1, "batch_size": 4, "log_every": 2, "seeds": [0]})
    toy["matrix"] = {"guidance_fixed": [0, 1, 2, 3, 5]}  # the sampled range and the fixed scales its toy claims name: a curve and a mark
    toy["eval"].update({"num_samples": 16, "batch_size": 16, "teacher_steps": [6], "nfe": [2, 4], "grid_size": 4})
    study = tmp / "ablation_guidance.toml"
    study.write_text(tomli_w.dumps(data))
    run = tmp / "runs" / "ablation_guidance-toy"
    assert main(["run", str(study), "--output", str(run)]) == 0
    reports = tmp / "reports"
    publish_reports([run], reports)
    return reports


def _screenshot(page, path: Path) -> None:
    from PIL import Image, ImageStat

    width, height = page.screenshot(path)
    image = Image.open(path)
    assert image.size == (width, height) and height > 900, image.size
    # not a blank page: text, tables and images make the grey levels vary
    assert ImageStat.Stat(image.convert("L")).stddev[0] > 10
    keep = os.environ.get("FLASHBENCH_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / path.name)


def _assert_clean_and_visible(page, *, min_tables: int, min_images: int, min_svgs: int) -> dict:
    errors = page.console_errors()
    assert errors == [], errors
    probe = page.evaluate(VISIBILITY_PROBE)
    assert probe["scripts"] == 0
    assert probe["tables"] >= min_tables and probe["table_cells"] > 0 and probe["tables_hidden"] == [], probe
    assert probe["images"] >= min_images and probe["images_broken"] == [] and probe["images_hidden"] == [], probe
    assert probe["svgs"] >= min_svgs and probe["svgs_hidden"] == [], probe
    assert probe["scroll_width"] <= 1280, "the page scrolls sideways; wide tables belong in a scrolling box"
    # self-contained: every link stays in the page, is a data: download, or a sibling report
    assert all(h.startswith(("#", "data:")) or ("/" not in h and h.endswith(".html")) or h.endswith("/report.html") for h in probe["links"]), probe["links"]
    return probe


@pytest.mark.slow
def test_toy_study_report_in_chromium(chromium, toy_reports, tmp_path):
    report = toy_reports / "ablation_guidance-toy.html"
    with chromium_page(chromium) as page:
        open_file(page, report)
        probe = _assert_clean_and_visible(page, min_tables=3, min_images=4, min_svgs=3)
        assert probe["title"].startswith("Figure 5(d)")
        # the FID-vs-CLIP curve is drawn with its sampled-range point, and the verdicts sit beside it
        assert page.evaluate("document.querySelectorAll('svg.tradeoff path.sampled').length") == 2
        assert page.evaluate("document.querySelector('.cols .box').getBoundingClientRect().width") > 250
        _screenshot(page, tmp_path / "ablation_guidance-toy.png")

        open_file(page, toy_reports / "index.html")
        probe = _assert_clean_and_visible(page, min_tables=1, min_images=0, min_svgs=0)
        assert "ablation_guidance-toy.html" in probe["links"]
        _screenshot_index = tmp_path / "index.png"
        page.screenshot(_screenshot_index)


def test_committed_example_reports_in_chromium(chromium, tmp_path):
    reports = sorted(p for p in EXAMPLE.glob("*.html") if p.name != "index.html")
    assert reports, "reports/example holds the committed example reports"
    with chromium_page(chromium) as page:
        for report in reports:
            open_file(page, report)
            _assert_clean_and_visible(page, min_tables=3, min_images=2, min_svgs=0)
        _screenshot(page, tmp_path / f"{reports[-1].stem}.png")
        open_file(page, EXAMPLE / "index.html")
        probe = _assert_clean_and_visible(page, min_tables=1, min_images=0, min_svgs=0)
        assert sorted(probe["links"]) == sorted(p.name for p in reports)


def test_the_probe_sees_console_errors_and_broken_images(chromium, tmp_path):
    """The negative control: a page with a console error, an exception and a missing image must fail the checks."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body><table><tr><td>x</td></tr></table>"
        "<img src='missing.png' alt='gone'><script>console.error('boom'); undefined_function();</script>"
        "</body></html>"
    )
    with chromium_page(chromium) as page:
        open_file(page, bad)
        errors = page.console_errors()
        probe = page.evaluate(VISIBILITY_PROBE)
    assert any("boom" in e for e in errors) and any("undefined_function" in e for e in errors)
    assert any("ERR_FILE_NOT_FOUND" in e for e in errors)
    assert probe["images_broken"] == ["gone"] and probe["scripts"] == 1


def test_screenshot_helper_decodes(chromium, tmp_path):
    from PIL import Image

    page_file = tmp_path / "p.html"
    page_file.write_text("<!DOCTYPE html><html><body style='margin:0'><div style='height:1500px;background:#123456'></div></body></html>")
    with chromium_page(chromium) as page:
        open_file(page, page_file)
        width, height = page.screenshot(tmp_path / "p.png")
    image = Image.open(io.BytesIO((tmp_path / "p.png").read_bytes())).convert("RGB")
    assert (width, height) == image.size and height >= 1500
    assert image.getpixel((10, 1400)) == (0x12, 0x34, 0x56)  # the full page, beyond the 900 px viewport
