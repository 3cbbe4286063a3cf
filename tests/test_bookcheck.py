import shutil

import bookcheck
import numpy as np
import pytest
from PIL import Image


def _png(path, value=None):
    rng = np.random.default_rng(0)
    pixels = (
        rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) if value is None else np.full((40, 60, 3), value, np.uint8)
    )
    Image.fromarray(pixels).save(path)


def _book(tmp_path, figure_html):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_images").mkdir()
    _png(tmp_path / "_images" / "fig.png")
    (tmp_path / "index.html").write_text("<html><body><h1>Study</h1><p>text</p></body></html>")
    (tmp_path / "notebooks" / "01_x.html").write_text(f"<html><body><h1>Notebook</h1>{figure_html}</body></html>")
    return tmp_path


def test_image_sources_lists_every_img(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<p><img src="a.png"><IMG alt="x" src="b/c.png"/></p><img alt="no source">')
    assert bookcheck.image_sources(page) == ["a.png", "b/c.png"]


def test_follow_redirect_reads_meta_refresh(tmp_path):
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=intro.html" />')
    (tmp_path / "intro.html").write_text("<p>intro</p>")
    assert bookcheck.follow_redirect(tmp_path / "index.html") == (tmp_path / "intro.html").resolve()
    assert bookcheck.follow_redirect(tmp_path / "intro.html") == tmp_path / "intro.html"


def test_good_book_has_no_problems(tmp_path):
    book = _book(tmp_path, '<img src="../_images/fig.png">')
    assert bookcheck.check_book(book) == []


def test_missing_and_corrupt_figures_are_reported(tmp_path):
    book = _book(tmp_path, '<img src="../_images/missing.png"><img src="../_images/bad.png">')
    (book / "_images" / "bad.png").write_bytes(b"\x89PNG not really")
    problems = bookcheck.check_book(book)
    assert any("missing.png" in p for p in problems)
    assert any("bad.png" in p for p in problems)


def test_notebook_page_without_figures_is_reported(tmp_path):
    book = _book(tmp_path, "<p>no figure</p>")
    assert bookcheck.check_book(book) == ["notebooks/01_x.html: 0 figures, expected >= 1"]


def test_missing_index_is_reported(tmp_path):
    assert "is missing" in bookcheck.check_book(tmp_path)[0]


def test_is_blank_detects_flat_images(tmp_path):
    _png(tmp_path / "flat.png", value=255)
    _png(tmp_path / "noisy.png")
    assert bookcheck.is_blank(tmp_path / "flat.png")
    assert not bookcheck.is_blank(tmp_path / "noisy.png")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_chromium_screenshot_shows_the_figure(tmp_path):
    book = _book(tmp_path, '<img src="../_images/fig.png" width="600">')
    shots = tmp_path / "shots"
    assert bookcheck.check_book(book, shots) == []
    with Image.open(shots / "01_x.png") as shot:
        pixels = np.asarray(shot.convert("RGB"))
    # the random-noise figure makes the page far from the flat white of a text-only page
    assert pixels.std() > 20
