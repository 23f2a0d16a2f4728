"""BENCHMARKS.md: every in-page link resolves to a heading, and each table of
"Current figures" keeps one row per measurement with its command and target."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"


def anchor(heading: str) -> str:
    """GitHub's rule: lowercase, drop punctuation but '-' and '_', spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        base = anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")  # GitHub numbers repeats
    return out


def links(markdown: str) -> list[str]:
    return re.findall(r"\]\(#([^)]+)\)", markdown)


def file_links(markdown: str) -> list[tuple[str, str]]:
    """Links into another page of the tree: (relative path, anchor)."""
    return re.findall(r"\]\(([\w./-]+\.md)#([^)]+)\)", markdown)


PAGES = [DOC, DOC.parent / "docs" / "benchmarks-history.md"]


def test_the_anchor_rule_matches_githubs():
    assert anchor("The compiled core at 5x (issue 15, 2026-12-07)") == \
        "the-compiled-core-at-5x-issue-15-2026-12-07"
    assert anchor("Blocking `Socket`") == "blocking-socket"
    assert anchor("The batch path's rows in one C call") == "the-batch-paths-rows-in-one-c-call"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
    assert file_links("[x](docs/h.md#a-b) [y](#c)") == [("docs/h.md", "a-b")]


def test_every_link_in_the_pages_names_a_heading():
    """Links within BENCHMARKS.md and its history page, and between them."""
    found = 0
    for page in (p for p in PAGES if p.exists()):
        text = page.read_text(encoding="utf-8")
        found += len(links(text))
        broken = sorted({name for name in links(text) if name not in anchors(text)})
        assert broken == [], page.name
        for rel, name in file_links(text):
            target = (page.parent / rel).resolve()
            assert target.exists(), f"{page.name} links to missing {rel}"
            assert name in anchors(target.read_text(encoding="utf-8")), f"{page.name}: {rel}#{name}"
    assert found, "no in-page links found: the pattern no longer matches"


def current_tables(text: str) -> list[list[str]]:
    part = text.split("\n## Current figures\n", 1)[1].split("\n## ", 1)[0]
    tables: list[list[str]] = []
    rows: list[str] = []
    for line in part.splitlines() + [""]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def test_current_figures_hold_one_row_per_measurement_with_command_and_target():
    tables = current_tables(DOC.read_text(encoding="utf-8"))
    assert tables
    for rows in tables:
        head = [c.strip() for c in rows[0].strip("|").split("|")]
        met = next((i for i, h in enumerate(head) if h.startswith("Met?")), None)
        assert "Command" in head and "Details" in head and met is not None, head
        names = [r.strip("|").split("|")[0].strip() for r in rows[2:]]
        assert len(names) == len(set(names)), f"a measurement listed twice: {names}"
        for r in rows[2:]:
            cells = r.strip("|").split("|")
            assert len(cells) == len(head), f"{len(cells)} cells, not {len(head)}: {r[:80]}"
            assert cells[met].strip(), f"no target stated: {r[:80]}"
