"""The layers of `bridge/`: a module imports only from its own layer or the ones below it.

Every import counts, including those inside functions and under TYPE_CHECKING: a lazy import that
runs back up the layers is still a dependency a reader has to know about.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bridge"

# Lowest first. A module belongs to the first layer one of whose prefixes it starts with.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "bridge.aio",
            "bridge.clock",
            "bridge.durations",
            "bridge.errors",
            "bridge.config",
            "bridge.models",
            "bridge.metrics",
            "bridge.tracing",
            "bridge.logs",
            "bridge.outages",
        ),
    ),
    ("backends", ("bridge.backends",)),
    ("runtime", ("bridge.runtime",)),
    ("worker", ("bridge.worker",)),
    ("server", ("bridge.server",)),
    ("client", ("bridge.client",)),
    (
        "sdk",
        (
            "bridge.auth",
            "bridge.tasks",
            "bridge.batch",
            "bridge.runs",
            "bridge.metadata",
            "bridge.steps",
            "bridge.streams",
            "bridge.wait",
        ),
    ),
    ("entry points", ("bridge.cli", "bridge.__main__", "bridge.testing", "bridge")),
]


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every `bridge...` module the file imports; `from bridge.x import y` counts `bridge.x.y` when that is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "bridge")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bridge":
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                relative = Path(*candidate.split("."))
                if (PACKAGE.parent / relative).with_suffix(".py").exists() or (PACKAGE.parent / relative).is_dir():
                    found.add(candidate)
    return found


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    for path in all_modules():
        layer_of(module_name(path))


def test_no_import_runs_back_up_the_layers() -> None:
    upward = []
    for path in all_modules():
        importer = module_name(path)
        for imported in sorted(imported_modules(path)):
            if imported == "bridge" and importer != "bridge":
                upward.append(f"{importer} imports the package `bridge` itself")
            elif layer_of(imported) > layer_of(importer):
                upward.append(
                    f"{importer} ({LAYERS[layer_of(importer)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
                )
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a lazy import from the worker into the SDK is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from bridge import tasks\n    from bridge.runtime.engine import RunEngine\n")
    assert imported_modules(sample) == {"bridge", "bridge.tasks", "bridge.runtime.engine"}
    assert layer_of("bridge.tasks") > layer_of("bridge.worker.registry")
