"""Check a built Jupyter Book: every page's figures exist and decode, and Chromium renders it.

Run as ``python -m bookcheck book/_build/html --screenshots build/screenshots``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class _PageParser(HTMLParser):
    """Collects image sources and a ``<meta http-equiv="refresh">`` redirect target."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.redirect: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img" and attributes.get("src"):
            self.sources.append(attributes["src"])
        if tag == "meta" and (attributes.get("http-equiv") or "").lower() == "refresh":
            match = re.search(r"url=(\S+)", attributes.get("content") or "", flags=re.IGNORECASE)
            self.redirect = match.group(1).strip("'\"") if match else None


def _parse(page: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def image_sources(page: Path) -> list[str]:
    """The ``src`` of every ``<img>`` in an HTML page."""
    return _parse(page).sources


def follow_redirect(page: Path) -> Path:
    """The page a ``<meta http-equiv="refresh">`` page points to (``page`` itself if none).

    Jupyter Book's ``index.html`` is such a redirect; headless Chromium never finishes a
    screenshot of it.
    """
    target = _parse(page).redirect
    return (page.parent / target).resolve() if target else page


def broken_images(page: Path) -> list[str]:
    """Image sources of ``page`` that are missing or do not decode (``data:`` URIs are skipped)."""
    broken = []
    for src in image_sources(page):
        if src.startswith(("data:", "http://", "https://")):
            continue
        path = (page.parent / src.split("#")[0].split("?")[0]).resolve()
        try:
            with Image.open(path) as img:
                img.verify()
        except (OSError, SyntaxError):
            broken.append(src)
    return broken


def chromium_executable() -> str:
    """Path of the Chromium binary, or a clear error saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("Chromium not found: install Debian's package with `apt-get install chromium`")


def screenshot(page: Path, dest: Path, width: int = 1280, height: int = 2400) -> Path:
    """Render ``page`` in headless Chromium and save a PNG screenshot to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium_executable(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={dest}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    if not dest.exists():
        raise RuntimeError(f"Chromium wrote no screenshot of {page}")
    return dest


def is_blank(png: Path, min_std: float = 2.0) -> bool:
    """True when a screenshot is (almost) one flat colour."""
    with Image.open(png) as img:
        return float(np.asarray(img.convert("L"), dtype=float).std()) < min_std


def check_book(html_dir: Path, screenshot_dir: Path | None = None, min_figures: int = 1) -> list[str]:
    """Problems found in a built book (empty when it is fine).

    Every notebook page (``notebooks/*.html``) must show at least ``min_figures`` images, and every
    image on every page must decode. With ``screenshot_dir``, the index and each notebook page are
    rendered in headless Chromium and must not be blank.
    """
    html_dir = Path(html_dir)
    index = html_dir / "index.html"
    if not index.exists():
        return [f"{index} is missing: build the book first (make book)"]
    problems = [
        f"{page.relative_to(html_dir)}: broken image {src}"
        for page in sorted(html_dir.rglob("*.html"))
        for src in broken_images(page)
    ]
    notebook_pages = sorted((html_dir / "notebooks").glob("*.html"))
    if not notebook_pages:
        problems.append(f"{html_dir}/notebooks has no pages")
    for page in notebook_pages:
        n_images = len(image_sources(page))
        if n_images < min_figures:
            problems.append(f"{page.relative_to(html_dir)}: {n_images} figures, expected >= {min_figures}")
    if screenshot_dir is not None:
        for page in [follow_redirect(index), *notebook_pages]:
            png = screenshot(page, Path(screenshot_dir) / f"{page.stem}.png")
            if is_blank(png):
                problems.append(f"{page.relative_to(html_dir)}: blank screenshot {png}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check the built book at the command line's folder; 0 when every page passes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("html_dir", type=Path)
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for Chromium screenshots")
    parser.add_argument("--min-figures", type=int, default=1, help="figures each notebook page must show")
    args = parser.parse_args(argv)
    problems = check_book(args.html_dir, args.screenshots, args.min_figures)
    for problem in problems:
        print(f"book check: {problem}", file=sys.stderr)
    if not problems:
        print(f"book check: {args.html_dir} OK" + (f", screenshots in {args.screenshots}" if args.screenshots else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
