"""Check the built documentation site (``mkdocs build`` → ``site/``) for broken links and images.

    .venv/bin/mkdocs build --strict && .venv/bin/python tools/check_site.py [site]

Every page is parsed (html.parser): each internal link must reach a file of the site, each ``#anchor`` an id
on its page, each image, script and stylesheet a non-empty file, each SVG must parse. The README's relative
links must reach files of the repository. When Chromium is installed (``chromium`` on the PATH, or
``--chromium PATH``), every page is also rendered headless and any image the browser could not decode is
reported. External links are listed, not fetched (nothing here needs the network). Exit status 1 on any
problem, each printed with the page it is on.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, data:, javascript:
RESOURCES = {("a", "href"), ("img", "src"), ("script", "src"), ("link", "href"), ("source", "src")}
PROBE = """<script>window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  const out = document.createElement("pre"); out.id = "__check_site__"; out.textContent = JSON.stringify(broken);
  document.body.appendChild(out);
});</script>"""


class Page(HTMLParser):
    """The links, resources and anchor ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []  # (tag, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("id", "name"):
            if values.get(name) and (name == "id" or tag == "a"):
                self.ids.add(str(values[name]))
        for resource_tag, attr in RESOURCES:
            if tag == resource_tag and values.get(attr):
                if (
                    tag == "link"
                    and "stylesheet" not in (values.get("rel") or "")
                    and "icon" not in (values.get("rel") or "")
                ):
                    continue
                self.refs.append((tag, str(values[attr])))


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def target_file(site: Path, page: Path, url: str) -> Path:
    """The file an internal URL on ``page`` points at (a folder means its index.html)."""
    path = unquote(urlsplit(url).path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path if path else page)
    target = target.resolve()
    return target / "index.html" if target.is_dir() else target


def check_links(site: Path) -> tuple[list[str], set[str]]:
    """Problems found by parsing, and the external URLs seen."""
    pages = {path.resolve(): parse(path) for path in sorted(site.rglob("*.html"))}
    problems, external = [], set()
    for path, page in pages.items():
        where = path.relative_to(site.resolve())
        for tag, url in page.refs:
            if EXTERNAL.match(url):
                if url.startswith(("http:", "https:")):
                    external.add(url)
                continue
            target = target_file(site, path, url)
            if not target.is_relative_to(site.resolve()) or not target.is_file():
                problems.append(f"{where}: <{tag}> {url} → missing {target}")
                continue
            if tag != "a" and target.stat().st_size == 0:
                problems.append(f"{where}: <{tag}> {url} → empty file")
            if target.suffix == ".svg":
                try:
                    ET.parse(target)
                except ET.ParseError as err:
                    problems.append(f"{where}: <{tag}> {url} → not a valid SVG ({err})")
            fragment = urlsplit(url).fragment
            if tag == "a" and fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(fragment) not in ids:
                    problems.append(f"{where}: <a> {url} → no id {fragment!r} on {target.relative_to(site.resolve())}")
    return problems, external


def check_readme(readme: Path = REPO / "README.md") -> list[str]:
    """Relative links and images of the README must reach files of the repository."""
    problems = []
    for url in re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8")):
        if EXTERNAL.match(url) or url.startswith("#"):
            continue
        if not (readme.parent / unquote(urlsplit(url).path)).exists():
            problems.append(f"README.md: {url} → missing")
    return problems


def check_rendered(site: Path, chromium: str) -> list[str]:
    """Render every page in headless Chromium and list the images it could not load or decode."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(site, copy)
        for path in sorted(copy.rglob("*.html")):
            html = path.read_text(encoding="utf-8")
            path.write_text(html.replace("</body>", PROBE + "</body>") if "</body>" in html else html + PROBE)
            command = [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--allow-file-access-from-files",
                "--virtual-time-budget=5000",
                "--dump-dom",
                path.as_uri(),
            ]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            where = path.relative_to(copy)
            found = re.search(r'<pre id="__check_site__">(.*?)</pre>', result.stdout, re.S)
            if not found:
                problems.append(
                    f"{where}: Chromium did not render the page (exit {result.returncode}): "
                    f"{result.stderr.strip()[-300:]}"
                )
                continue
            broken = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
            problems += [f"{where}: image {src} did not render in Chromium" for src in broken]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", type=Path, default=REPO / "site", help="the built site (default: site/)")
    parser.add_argument("--chromium", help="Chromium binary (default: chromium or chromium-browser on the PATH)")
    parser.add_argument("--no-chromium", action="store_true", help="parse only, even when Chromium is installed")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"{args.site}: no index.html; run `mkdocs build` first")
    problems, external = check_links(args.site)
    problems += check_readme()
    pages = len(list(args.site.rglob("*.html")))
    chromium = (
        None if args.no_chromium else (args.chromium or shutil.which("chromium") or shutil.which("chromium-browser"))
    )
    if chromium:
        problems += check_rendered(args.site, chromium)
    for problem in problems:
        print(problem)
    print(
        f"{pages} pages, {len(external)} external links (not fetched), "
        f"{'rendered in ' + chromium if chromium else 'not rendered (no Chromium)'}: "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
