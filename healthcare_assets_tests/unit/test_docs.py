"""The README is a start page and the docs hang together: every relative link and anchor lands,
every page under docs/ is reachable from the README, and the commands a newcomer needs are on it."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from healthcare_assets_tests.fixtures.environment import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a shell block is not a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: dict[str, int] = {}
    result = set()
    for line in _prose_lines(path.read_text()):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        seen = found.get(base, 0)
        result.add(base if seen == 0 else f"{base}-{seen}")
        found[base] = seen + 1
    return result


def links(path: Path) -> list[str]:
    targets = []
    for line in _prose_lines(path.read_text()):
        targets += LINK.findall(INLINE_CODE.sub("", line))
    return targets


def relative_links(path: Path) -> list[str]:
    return [t for t in links(path) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_slug_follows_githubs_rules():
    assert slug("1. One host: docker compose") == "1-one-host-docker-compose"
    assert slug("What `make run` does not run") == "what-make-run-does-not-run"
    assert slug("The analysts' release: policy, threat model") == "the-analysts-release-policy-threat-model"
    assert slug("Compose → Kubernetes") == "compose--kubernetes"


def test_the_readme_is_a_start_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_lands(page: Path):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(README) if t.partition("#")[0]}
    missing = [str(p.relative_to(REPO)) for p in DOCS if p.resolve() not in linked]
    assert DOCS and not missing, f"docs pages the README does not link: {missing}"


def test_every_docs_page_says_what_it_covers_and_links_back():
    for page in DOCS:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# "), page.name
        opening = "\n".join(lines[1:4])
        assert "](../README.md" in opening, f"{page.name}: no link back to the README near the top"


def test_the_commands_section_names_what_a_newcomer_types():
    text = README.read_text()
    match = re.search(r"^## Commands\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Commands' section"
    section = match.group(1)
    for command in ("make run", "make test", "healthcare-assets load", "mongo uri --role"):
        assert command in section, f"the README's commands section does not name `{command}`"
