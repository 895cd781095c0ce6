"""README.md's snippets run as written, against real bridges (tests/support/readme.py has the convention).

Every fenced block is labelled and taken by a test here. Python files are written under their names and
served by `realtime-bridge serve` (or uvicorn, for the mount blocks); programs and top-level-await blocks
run as programs against it. Shell blocks run verbatim with bash, in a directory holding the README's
files and `.venv` (this virtualenv), on a free port given as `BRIDGE_PORT` (a setting, not a rewrite);
the one rewrite is the Redis URL (`redis://127.0.0.1:6379/0`, never touched by tests), which becomes a
redis-server this test started.
Not run: the set-up commands (`bash scripts/test` would run this suite again), checked to be the two
scripts; `docker` lines (no docker here), checked to name files that exist. The tsx block is
type-checked against both hook packages.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from bridge import configure, streams, tasks
from bridge.config import Settings
from bridge.models import RunStatus
from bridge.runtime.access import AUDIENCE
from bridge.testing.redis_server import free_port, start_redis_server
from tests.conftest import SECRET_KEY
from tests.support.helpers import TIMEOUT, until_final, until_run
from tests.support.processes import ROOT, Background, background, environment, run_program, serving_app
from tests.support.readme import README, blocks, program, snippet, write_file
from tests.support.serve import wait_until_up
from tests.support.ws_client import connect, on_topic, runs_in

README_REDIS_URL = "redis://127.0.0.1:6379/0"
WEB_MODULES = ROOT / "examples/demo/web/node_modules"  # the demo page's: both hook packages and TypeScript


def labels_taken_by_tests() -> set[str]:
    """The labels written out in `snippet("...")` calls in the test modules."""
    taken: set[str] = set()
    for module in ROOT.glob("tests/test_*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "snippet":
                taken.update(
                    arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                )
    return taken


def test_every_block_is_labelled_and_taken_by_a_test() -> None:
    found = blocks()
    fences = [line for line in README.read_text().splitlines() if line.lstrip().startswith("```")]
    assert len(fences) == 2 * len(found), "a fenced block this convention misses (indented?)"
    assert [block.text.splitlines()[0] for block in found if block.label is None] == [], "unlabelled blocks"
    labels = [block.label for block in found]
    assert len(set(labels)) == len(labels), labels
    assert set(labels) - labels_taken_by_tests() == set(), "blocks no test runs"


def test_the_set_up_blocks_are_the_two_scripts() -> None:
    assert (snippet("setup-run"), snippet("setup-test")) == ("bash scripts/run\n", "bash scripts/test\n")
    for script in ("scripts/run", "scripts/test"):
        parsed = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert parsed.returncode == 0, parsed.stderr  # a bash script, and one bash can read


def test_the_docker_block_makes_a_key_the_bridge_takes_and_names_files_that_exist(tmp_path: Path) -> None:
    lines = snippet("docker").splitlines()
    assert [line for line in lines if line.startswith("docker ")] == ["docker compose up --build"]
    assert (ROOT / "compose.yaml").is_file() and (ROOT / "Dockerfile").is_file()
    rest = "\n".join(line for line in lines if not line.startswith("docker "))
    subprocess.run(["bash", "-e", "-c", rest], cwd=tmp_path, env=environment(), check=True, timeout=30)
    name, key = (tmp_path / ".env").read_text().strip().split("=", 1)
    assert name == "BRIDGE_SECRET_KEY" and "${BRIDGE_SECRET_KEY" in (ROOT / "compose.yaml").read_text()
    Settings(secret_key=key)  # long enough


@pytest.fixture
def readme_dir(tmp_path: Path) -> Path:
    """A directory as the README's commands expect it: the Quick start's tasks.py, backend.py and `.venv`."""
    write_file(tmp_path, snippet("quick-start"))
    (tmp_path / "backend.py").write_text(snippet("from-your-backend"))
    (tmp_path / ".venv").symlink_to(sys.prefix)
    return tmp_path


def up(port: int, started: Background) -> str:
    """The URL of the bridge `started` serves on `port`, once it answers."""
    try:
        wait_until_up(port)
    except SystemExit:
        raise AssertionError(f"nothing answered on port {port}:\n{started.output()}") from None
    return f"http://127.0.0.1:{port}"


def assert_backend_ran(output: str, key: str) -> None:
    """What backend.py prints against a bridge serving the Quick start's tasks.py."""
    first, *states, result, token = output.splitlines()
    run_id, page_token = first.split()
    for signed, scopes in ((page_token, [f"read:runs:{run_id}", f"write:inputStreams:{run_id}"]), (token, None)):
        claims = jwt.decode(signed, key, algorithms=["HS256"], audience=AUDIENCE)
        assert claims["scopes"] == (scopes or [f"read:runs:{run_id}"])
    assert states[-1] == "COMPLETED {'progress': 0.5}", states
    assert result == "{'sent': True}"


async def test_the_quick_start_in_memory_with_the_backend_program(readme_dir: Path) -> None:
    port = free_port()  # BRIDGE_PORT: the setting a user would take to move `serve` off 8787
    env = environment(BRIDGE_SECRET_KEY=SECRET_KEY, BRIDGE_PORT=str(port))  # "a secret key of your own"
    with background(["bash", "-c", snippet("serve")], readme_dir, env) as serve:
        url = up(port, serve)
        output = await run_program(readme_dir / "backend.py", environment(BRIDGE_URL=url, BRIDGE_SECRET_KEY=SECRET_KEY))
    assert_backend_ran(output, SECRET_KEY)


async def test_the_quick_start_with_redis_with_the_backend_program(readme_dir: Path) -> None:
    block = snippet("serve-redis")
    assert block.count(README_REDIS_URL) == 2
    redis = start_redis_server()
    try:
        command = block.replace(README_REDIS_URL, redis.url)  # the one rewrite
        # -x: bash traces each command as it runs it, so the log shows the key the block made
        port = free_port()
        env = environment(PS4="+ ", BRIDGE_PORT=str(port))
        with background(["bash", "-x", "-c", command], readme_dir, env) as both:
            url = up(port, both)
            made = re.search(r"^\+ export BRIDGE_SECRET_KEY=(tr_prod_\w{64})$", both.output(), re.MULTILINE)
            assert made, both.output()
            output = await run_program(
                readme_dir / "backend.py", environment(BRIDGE_URL=url, BRIDGE_SECRET_KEY=made[1])
            )
            assert "running draft-email with concurrency 10" in both.output()
    finally:
        redis.stop()
    assert_backend_ran(output, made[1])


async def test_the_task_modules_serve_what_their_backend_blocks_and_the_prose_say(tmp_path: Path) -> None:
    blocks = (snippet("chat"), snippet("review"), snippet("welcome"), snippet("children"))
    modules = [write_file(tmp_path, text).name for text in blocks]
    backends = {
        "chat": snippet("chat-backend"),
        "review": snippet("review-backend"),
        "welcome": snippet("welcome-backend"),
        "children": snippet("children-backend"),
        "delayed": snippet("delayed-backend"),
    }
    for name, text in backends.items():
        (tmp_path / f"{name}_backend.py").write_text(program(text))
    serve = [sys.executable, "-m", "bridge", "serve", *(f"--tasks={module}" for module in modules)]
    port = free_port()
    with background([*serve, "--port", str(port)], tmp_path, environment(BRIDGE_SECRET_KEY=SECRET_KEY)) as served:
        url = up(port, served)
        client = environment(BRIDGE_URL=url, BRIDGE_SECRET_KEY=SECRET_KEY)
        chat, review, welcome, children, delayed = await asyncio.gather(
            *(run_program(tmp_path / f"{name}_backend.py", client) for name in backends)
        )
        transport = configure(url=url, secret_key=SECRET_KEY)
        try:
            await check_what_the_prose_says(welcome.strip())
        finally:
            await transport.aclose()
            configure()

    *chunks, output = chat.splitlines()
    assert chunks == [f"{n} " for n in range(len(chunks))] and 4 <= len(chunks) < 1000  # each once, in order
    result: dict[str, Any] = ast.literal_eval(output)
    assert result["stopped"] is True and "".join(chunks).startswith(result["text"]) and "3 " in result["text"]
    assert review == "{'approved': True} COMPLETED\n"
    assert children == "['img-64.png', 'img-128.png', 'failed: width must be positive']\n"
    assert delayed == "DELAYED\nWAITING\n"


async def check_what_the_prose_says(welcome_run: str) -> None:
    """The runs the README's prose describes beyond what its backend blocks print."""
    # "publish": WAITING until its approval arrives
    publish = await tasks.trigger("publish", {})
    await until_run(publish.id, lambda run: run.status is RunStatus.WAITING)
    await streams.input("approval").send(publish.id, {"approved": True})
    assert (await until_final(publish.id)).output == {"published": True}
    # "remind": WAITING in wait.for_; "welcome": parked for a day after its step, or FAILED at once when banned
    remind = await tasks.trigger("remind", {})
    for waiting in (remind.id, welcome_run):
        await until_run(waiting, lambda run: run.status is RunStatus.WAITING)
    banned = await until_final((await tasks.trigger("welcome", {"email": "x@spam.example"})).id)
    assert (banned.status, banned.attempt_number) == (RunStatus.FAILED, 1)
    assert banned.error is not None and (banned.error.name, banned.error.message) == ("AbortTaskRunError", "banned")


DJANGO_PROJECT = {  # what mysite/asgi.py needs beside it: settings, and a view that triggers
    "mysite/settings.py": 'from examples.django_app.settings import *  # noqa: F403\n\nROOT_URLCONF = "mysite.urls"\n',
    "mysite/urls.py": """import json

from django.http import HttpRequest, JsonResponse
from django.urls import path

from bridge import tasks


async def draft(request: HttpRequest) -> JsonResponse:  # the FastAPI block's route, as a Django view
    handle = await tasks.trigger("draft-email", json.loads(request.body))
    return JsonResponse({"runId": handle.id, "publicAccessToken": handle.public_access_token})


urlpatterns = [path("api/drafts", draft)]
""",
}


@pytest.mark.parametrize("framework", ["fastapi", "django"])
async def test_the_mount_blocks_serve_the_apps_route_and_the_page_sees_the_run(framework: str, tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp/tasks.py").write_text(snippet("quick-start"))  # "the Quick start's tasks.py as myapp/tasks.py"
    if framework == "fastapi":
        target = "main:app"
        write_file(tmp_path, snippet("mount-fastapi"))
    else:
        target = "mysite.asgi:application"
        write_file(tmp_path, snippet("mount-django"))
        for path, text in DJANGO_PROJECT.items():
            (tmp_path / path).write_text(text)
    async with serving_app(target, "--app-dir", str(tmp_path)) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=TIMEOUT) as http:
            started = (await http.post("/api/drafts", json={"to": "a@b.c"})).raise_for_status().json()
        async with connect(app.bridge_url.replace("http://", "ws://") + "/ws") as page:
            await page.subscribe_run("s1", started["runId"], started["publicAccessToken"])
            done = on_topic(f"run:{started['runId']}", lambda run: run["status"] == "COMPLETED")
            (run,) = runs_in(await page.expect(done, timeout=TIMEOUT))
    assert (run["metadata"], run["output"]) == ({"progress": 0.5}, {"sent": True})
    assert "Traceback" not in app.stderr, app.stderr


def test_the_hooks_block_type_checks_with_the_official_hooks_and_ours(tmp_path: Path) -> None:
    if not (WEB_MODULES / "@trigger.dev/react-hooks").is_dir():
        pytest.fail(f"{WEB_MODULES} is missing: run `scripts/install --web`", pytrace=False)
    block = snippet("official-hooks")
    official, ours = '"@trigger.dev/react-hooks"', '"@realtime-bridge/react-hooks"'
    assert official in block
    given = "declare const runId: string;\ndeclare const accessToken: string;\n"  # what the page has
    (tmp_path / "official.tsx").write_text(given + block)
    (tmp_path / "ours.tsx").write_text(given + block.replace(official, ours))  # "change the import"
    react = str(WEB_MODULES / "@types/react")
    options = {
        "strict": True,
        "noEmit": True,
        "skipLibCheck": True,
        "target": "ES2022",
        "lib": ["ES2022", "DOM"],
        "module": "ESNext",
        "moduleResolution": "Bundler",
        "jsx": "react-jsx",
        "types": [],
        "paths": {"react": [react], "react/*": [f"{react}/*"], "*": [f"{WEB_MODULES}/*"]},
    }
    config = {"compilerOptions": options, "files": ["official.tsx", "ours.tsx"]}
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    checked = subprocess.run(
        [WEB_MODULES / ".bin/tsc", "-p", tmp_path], capture_output=True, text=True, timeout=120, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
