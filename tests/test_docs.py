"""The README and docs/ point into each other by relative path and `#anchor`: a moved page or a renamed heading must
not leave a reader at a dead link. Anchors are the slugs GitHub gives headings, so the check needs no network."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def _prose(text: str) -> str:
    """The text a reader sees as Markdown: fenced blocks and inline code hold no links."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower case, punctuation but `-` and `_` dropped, spaces as `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers; a repeated heading's later slugs get -1, -2, ... as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        out.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return out


def broken_links(pages: list[Path]) -> tuple[list[str], int]:
    """(one line per relative link whose file or anchor is missing, how many relative links were checked)."""
    broken: list[str] = []
    checked = 0
    for page in pages:
        for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: are not files
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}: no file {dest}")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{page.name}: {target}: no heading with anchor '#{anchor}' in {dest.name}")
    return broken, checked


def test_every_relative_link_in_readme_and_docs_resolves():
    broken, checked = broken_links([README, *PAGES])
    assert not broken, "\n".join(broken)
    assert checked >= 2 * len(PAGES), f"only {checked} relative links checked in README.md and {len(PAGES)} docs pages"


def test_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _LINK.findall(_prose(README.read_text(encoding="utf-8")))}
    unlinked = [p.name for p in PAGES if p.resolve() not in linked]
    assert not unlinked, f"docs pages no README link leads to: {unlinked}"
    assert len(PAGES) >= 2, f"expected docs/*.md pages, found {len(PAGES)}"


def test_broken_links_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path):
    (tmp_path / "b.md").write_text("# `--json` and progress\n\n## Set-up (two commands)\n\n## Set-up (two commands)\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#--json-and-progress) [ok](b.md#set-up-two-commands-1) [ok](https://example.org/x#y)\n"
                    "[gone](c.md) [no anchor](b.md#progress) [self](#nowhere)\n"
                    "`[code](d.md)`\n```\n[fenced](e.md)\n```\n")
    broken, checked = broken_links([page])
    assert checked == 5, f"checked {checked} relative links, expected 5 (code and the external link are not links)"
    assert [line.split(": ")[1] for line in broken] == ["c.md", "b.md#progress", "#nowhere"], broken


def test_readme_keeps_the_two_set_up_commands():
    """The standard: exactly two set-up commands, one for the demo and one for the tests, each a single line."""
    section = README.read_text(encoding="utf-8").split("## Set-up (two commands)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, re.M | re.S)
    assert len(blocks) == 2, f"README's set-up section has {len(blocks)} bash blocks, expected 2"
    assert all(b.count("\n") == 1 and b.startswith("python3 -m venv .venv && ") for b in blocks), blocks
    assert "detnas demo" in blocks[0] and "pytest" in blocks[1], blocks
