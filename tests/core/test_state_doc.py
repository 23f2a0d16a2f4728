import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_state_diagram_doc_is_generated_from_the_table():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "statediagram.py")], capture_output=True, text=True, check=True
    ).stdout
    assert (ROOT / "docs" / "states.md").read_text() == out, "run: python tools/statediagram.py > docs/states.md"
