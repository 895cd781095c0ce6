"""README.md's snippets, for the tests that run them as written (tests/test_readme.py).

The convention: every fenced block is labelled after its language, e.g. "```python from-your-backend";
renderers take the first word as the language and ignore the rest. A test takes a block with
`snippet("label")` (always with the label written out: tests/test_readme.py checks that every label
is taken by some test). What a Python block is decides how it runs:
- a file: its first line is `# <path>.py` (a task module, an app): written under that path;
- a program: complete, it reads what it needs from the environment (BRIDGE_URL, BRIDGE_SECRET_KEY);
- a block that awaits at its top level: the body of `async def main()`, run by `asyncio.run(main())`,
  as the README says (`program`).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```(\w*) ?([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_FILE_LINE = re.compile(r"# ([\w/]+\.py)\b")


@dataclass(frozen=True)
class Block:
    language: str
    label: str | None
    text: str


def blocks() -> list[Block]:
    """Every fenced block of README.md, in order."""
    found = _BLOCK.findall(README.read_text())
    return [Block(language, label.strip() or None, text) for language, label, text in found]


def snippet(label: str) -> str:
    """The text of the one README.md block labelled `label`."""
    found = [block.text for block in blocks() if block.label == label]
    assert len(found) == 1, f"README.md has {len(found)} blocks labelled {label!r}, not one"
    return found[0]


def write_file(directory: Path, text: str) -> Path:
    """Writes a file snippet where its first line (`# <path>.py`) says, under `directory`."""
    named = _FILE_LINE.match(text)
    assert named, f"a file snippet starts with `# <path>.py`, not {text.splitlines()[0]!r}"
    path = directory / named.group(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def program(text: str) -> str:
    """The program a block that awaits at its top level is the body of, as the README says."""
    return f"import asyncio\n\n\nasync def main() -> None:\n{textwrap.indent(text, '    ')}\n\nasyncio.run(main())\n"
