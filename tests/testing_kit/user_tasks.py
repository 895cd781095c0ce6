"""A user's tasks module, served by the kit's `bridge_server` in tests/test_testing_kit.py."""

from bridge import metadata, steps, streams, task, wait

attempts: dict[str, int] = {}


@task(id="review")
async def review(payload: dict) -> dict:
    token = await wait.create_token(timeout="24h")
    await metadata.set("token", token.id)
    result = await wait.for_token(token)
    return {"approved": result.output} if result.ok else {"timedOut": True}


@task(id="charge")
async def charge(payload: dict) -> str:
    await metadata.set("stage", "charging")
    await steps.run("charge-card", lambda: "charged")
    return "done"


@task(id="nap")
async def nap(payload: None) -> str:
    await wait.for_(hours=1)
    return "rested"


@task(id="flaky", retry={"max_attempts": 2, "min_timeout": "1h", "max_timeout": "1h", "randomize": False})
async def flaky(payload: str) -> str:
    attempts[payload] = attempts.get(payload, 0) + 1
    if attempts[payload] == 1:
        raise RuntimeError("first attempt fails")
    return "second attempt"


@task(id="chat")
async def chat(payload: None) -> str:
    await streams.define("reply").append("hello")
    return await streams.input("answers").once(timeout=30)
