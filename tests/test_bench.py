"""`python -m bench --smoke`: the bench's one command works end to end in its smallest mode (its own
redis-server, the bridge and the hand-roll as real servers, real WebSocket clients) and writes sane results.
Speed is not asserted here (bench/ measures it): only that every message reached every subscriber."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_mode_writes_results_for_both_systems(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--smoke", "--out-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    [data] = tmp_path.glob("*.json")
    results = json.loads(data.read_text())
    assert set(results["fanout"]) == {"bridge", "handroll"}
    for system, steps in results["fanout"].items():
        [step] = steps
        assert step["delivered"] > 0, system
        # Nothing lost: the hand-roll delivers every message; the bridge may coalesce versions (by design, when
        # two updates reach a connection's outbox together: the publisher sends two when it runs late), never
        # lose the latest. Skipped versions are counted over the whole step, warm-up included.
        missing = step["expected"] - step["delivered"]
        assert missing <= (0 if system == "handroll" else step["skipped_versions"]), (system, step)
        assert step["out_of_order"] == step["behind_latest"] == 0, (system, step)
        assert step["errors"] == [], (system, step)
        assert 0 < step["p50_ms"] <= step["p99_ms"], (system, step)
    markdown = data.with_suffix(".md").read_text()
    assert "| bridge |" in markdown and "| handroll |" in markdown
    assert "python -m bench --smoke" in markdown
