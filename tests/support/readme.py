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

import contextlib
import errno
import fcntl
import re
import socket
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
README_PORT = 8787  # where the README's `serve` commands listen: realtime-bridge serve's default
_BLOCK = re.compile(r"^```(\w*) ?([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_FILE_LINE = re.compile(r"# ([\w/]+\.py)\b")
LOCK_SECONDS = 120.0


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


@contextlib.contextmanager
def readme_port() -> Iterator[int]:
    """Port 8787, the README's, for this test alone: one test at a time on this machine takes it (a lock
    file), and a program of someone else's listening there is a clear failure, not a flake."""
    lock = Path(tempfile.gettempdir()) / f"realtime-bridge-readme-{README_PORT}.lock"
    with lock.open("w") as held:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"another test held port {README_PORT} over {LOCK_SECONDS:g} s"
                time.sleep(0.1)  # another process's lock: flock has no timeout to await
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as serve does: only a listener is in the way
            try:
                probe.bind(("127.0.0.1", README_PORT))
            except OSError as exc:
                assert exc.errno != errno.EADDRINUSE, f"port {README_PORT} is in use: stop what listens there"
                raise
        yield README_PORT
