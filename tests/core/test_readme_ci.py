"""The README's quick start and the CI entry point agree."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_has_the_demo_and_the_test_command():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    install_demo, install_test = commands
    assert install_demo.startswith("pip install .") and install_demo.endswith("gannet demo")
    assert install_test.startswith("pip install") and "pytest" in install_test


def test_ci_runs_the_readmes_test_command():
    test_command = quick_start_commands()[1]
    ci = ROOT / ".ci" / "run"
    lines = [line.strip() for line in ci.read_text().splitlines()]
    assert test_command in lines, f".ci/run does not run {test_command!r}"
    assert ci.stat().st_mode & 0o111, ".ci/run is not executable"
    assert lines.index(test_command) == max(i for i, line in enumerate(lines) if line and not line.startswith("#"))


def repeated_runs(lines: list[str], size: int = 8) -> list[int]:
    """Line numbers (1-based) where a run of `size` non-blank lines that
    appeared earlier in the page starts again."""
    seen: set[tuple[str, ...]] = set()
    starts = []
    for i in range(len(lines) - size + 1):
        run = tuple(lines[i:i + size])
        if any(not line.strip() for line in run):
            continue
        if run in seen:
            starts.append(i + 1)
        seen.add(run)
    return starts


PAGES = ["README.md", "CHANGELOG.md", "BENCHMARKS.md"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", PAGES)
def test_each_page_says_each_thing_once(page):
    """An edit that pastes a section twice (it happened to the README's
    examples and performance section) shows as a repeated heading or a
    repeated run of lines."""
    lines = (ROOT / page).read_text().splitlines()
    headings, in_code = [], False
    for line in lines:
        in_code ^= line.startswith("```")
        if not in_code and re.match(r"#{1,6} ", line):
            headings.append(line)
    assert len(headings) == len(set(headings)), headings
    assert repeated_runs(lines) == []
    assert repeated_runs(["a", "b", "x", "a", "b"], size=2) == [4]
