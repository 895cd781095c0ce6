"""What gets shipped, built from a copy of this checkout's files as a clean clone has them: the wheel and
the sdist, the npm package of js-hooks/ as `npm pack` makes it, and compose.yaml's services agreeing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
LUA_SCRIPTS = sorted(p.name for p in (ROOT / "bridge/backends/redis/scripts").glob("*.lua"))
BUILD_SECONDS = 120


def clean_copy(destination: Path, under: str = ".") -> Path:
    """The files under `under` that git tracks or would (untracked, not ignored): no build output,
    no node_modules, nothing a previous build left behind."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", under],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    for name in filter(None, os.fsdecode(listed).split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not in a clone of it
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clean_copy(tmp_path_factory.mktemp("checkout"))


def test_the_wheel_ships_the_typing_marker_and_the_lua_scripts_and_no_tests(source: Path, tmp_path: Path) -> None:
    # This environment's setuptools (with `wheel`, a test dependency): no download.
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "--wheel-dir", str(tmp_path), str(source)], check=True, timeout=BUILD_SECONDS)
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name == f"realtime_bridge-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"realtime_bridge-{VERSION}.dist-info/entry_points.txt").decode()
    assert "bridge/py.typed" in names and "bridge/__main__.py" in names
    assert LUA_SCRIPTS and {f"bridge/backends/redis/scripts/{name}" for name in LUA_SCRIPTS} <= names
    assert {name.split("/")[0] for name in names} == {"bridge", f"realtime_bridge-{VERSION}.dist-info"}
    assert any(re.fullmatch(rf"realtime_bridge-{VERSION}\.dist-info/(licenses/)?LICENSE", name) for name in names)
    assert "realtime-bridge = bridge.cli:main" in entry_points
    assert "[pytest11]\nrealtime-bridge = bridge.testing" in entry_points  # the kit's plugin, found by pytest


def test_the_sdist_holds_the_package_and_its_documents_only(source: Path, tmp_path: Path) -> None:
    # The PEP 517 hook `python -m build --sdist` calls, with this environment's setuptools.
    build = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    name = subprocess.run(
        [sys.executable, "-c", build], cwd=source, capture_output=True, text=True, check=True, timeout=BUILD_SECONDS
    ).stdout.splitlines()[-1]
    with tarfile.open(tmp_path / name) as archive:
        names = {member.name.split("/", 1)[1] for member in archive.getmembers() if "/" in member.name}
    top = {name.split("/")[0] for name in names}
    expected_top = {"bridge", "docs", "realtime_bridge.egg-info", "LICENSE", "README.md", "CHANGELOG.md"}
    assert top == expected_top | {"MANIFEST.in", "PKG-INFO", "pyproject.toml", "setup.cfg"}
    assert {"bridge/py.typed", *(f"bridge/backends/redis/scripts/{name}" for name in LUA_SCRIPTS)} <= names
    assert not any(name.endswith((".pyc", ".ts", ".tsx")) or "node_modules" in name for name in names)


def test_npm_pack_on_a_clean_checkout_ships_the_built_hooks(tmp_path: Path) -> None:
    package = clean_copy(tmp_path, "js-hooks") / "js-hooks"
    installed = ROOT / "js-hooks/node_modules"
    assert installed.is_dir(), "js-hooks has no node_modules: run `bash scripts/install --dev`"
    (package / "node_modules").symlink_to(installed.resolve())
    assert not (package / "dist").exists()
    packed = subprocess.run(
        ["npm", "pack", "--dry-run", "--json"], cwd=package, capture_output=True, text=True, timeout=BUILD_SECONDS
    )
    assert packed.returncode == 0, packed.stderr
    (report,) = json.loads(packed.stdout)
    files = {entry["path"] for entry in report["files"]}
    exports = json.loads((ROOT / "js-hooks/package.json").read_text())["exports"]
    # every entry point's files, "." and "./testing" (the Playwright helper) included
    built = {
        target.removeprefix("./")
        for entry in exports.values()
        if isinstance(entry, dict)
        for condition in entry.values()
        for target in condition.values()
    }
    assert {"dist/index.js", "dist/testing.js", "dist/testing.d.cts"} <= built
    assert built | {"package.json", "README.md", "LICENSE"} <= files
    assert not any(path.startswith(("src/", "test/", "node_modules/")) for path in files)
    assert report["version"] == json.loads((ROOT / "js-hooks/package.json").read_text())["version"]
    assert (ROOT / "js-hooks/LICENSE").read_text() == (ROOT / "LICENSE").read_text()


def test_compose_services_share_one_key_and_redis_and_publish_the_ports_they_listen_on() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    bridges = {name: service for name, service in compose["services"].items() if name != "redis"}
    assert set(bridges) == {"serve", "worker", "demo"}
    published: dict[str, str] = {}  # container port -> host port, per service
    for name, service in bridges.items():
        env = service["environment"]
        assert env["BRIDGE_SECRET_KEY"].startswith("${BRIDGE_SECRET_KEY:?"), name  # required, never a default
        assert env["BRIDGE_REDIS_URL"] == "redis://redis:6379/0" and "redis" in service["depends_on"], name
        assert service["build"]["target"] in targets, name
        for mapping in service.get("ports", []):
            host, container = mapping.split(":")
            published[name] = host
            listens = env.get("PORT") or service["command"][service["command"].index("--port") + 1]
            assert container == listens, name
    public_ports = {env["BRIDGE_PUBLIC_URL"].rsplit(":", 1)[1] for env in (s["environment"] for s in bridges.values())}
    assert public_ports <= set(published.values())
