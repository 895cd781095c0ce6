"""bridge.testing as a user gets it: a pytest run in a fresh project (pytester, in a subprocess) that finds
the plugin through the `pytest11` entry point pyproject.toml declares, and runs a user's tests
(tests/testing_kit/user_app_tests.py) against a user's tasks (tests/testing_kit/user_tasks.py) written
only against the kit's public API."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)
ROOT = Path(__file__).resolve().parent.parent
USER_PROJECT = Path(__file__).resolve().parent / "testing_kit"


def install_entry_points(directory: Path) -> None:
    """The package's entry points, as pyproject.toml declares them, in a distribution's metadata on the path
    (this environment's editable install may be from another checkout)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    info = directory / "realtime_bridge_under_test-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: realtime-bridge-under-test\nVersion: 0.0.0\n")
    groups = (f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in declared.items())
    (info / "entry_points.txt").write_text("\n".join(groups))


def test_a_users_tests_drive_runs_through_the_installed_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        user_tasks=(USER_PROJECT / "user_tasks.py").read_text(),
        test_user_app=(USER_PROJECT / "user_app_tests.py").read_text(),
    )
    pytester.makeini(
        "[pytest]\nbridge_tasks = user_tasks.py\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    install_entry_points(pytester.path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # this checkout's bridge, not the editable install's
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=10)


def test_the_plugin_imports_neither_the_server_nor_the_tasks_until_a_test_asks() -> None:
    # Every pytest run in an environment with the package loads it: its import must stay cheap.
    check = "import sys, bridge.testing; print(sorted(m for m in sys.modules if m in {'uvicorn', 'bridge.server.app'}))"
    loaded = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
