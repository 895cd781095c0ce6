"""The sample user project (examples/user_project) as its user runs it: `pytest` in its directory, with its own
pytest.ini, finding the bridge.testing plugin through the package's entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER_PROJECT = ROOT / "examples" / "user_project"


def test_the_sample_projects_own_tests_pass() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's bridge, not the editable install's
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=USER_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
