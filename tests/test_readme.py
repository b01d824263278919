"""The README stays a short front page that tells the truth about its commands: at most 12 KiB, its test command is
the one .ci/run runs, and every page it links to exists."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_readme_is_short():
    assert len((ROOT / "README.md").read_bytes()) <= 12_288


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^# \(b\).*\n(.+)$", readme, re.M).group(1).strip()
    assert command.startswith("python3 -m venv .venv") and "-m pytest" in command
    tested = command.split("&&")[-1].strip()  # the pytest call itself
    assert tested in (ROOT / ".ci" / "run").read_text()


def test_every_linked_page_exists():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links, "the README links its docs pages"
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, missing
