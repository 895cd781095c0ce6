"""README.md's snippets, for tests that run them as written.

The convention: a snippet a test runs is a fenced block whose info string names it after its language,
e.g. "```python from-your-backend"; renderers take the first word as the language and ignore the rest.
A Python snippet so labelled is a complete program (it reads what it needs from the environment).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(label: str) -> str:
    """The text of the one README.md block labelled `label`."""
    pattern = re.compile(rf"^```\w+ {re.escape(label)}\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    found = pattern.findall(README.read_text())
    assert len(found) == 1, f"README.md has {len(found)} blocks labelled {label!r}, not one"
    return str(found[0])
