# syntax=docker/dockerfile:1
# `docker build -t realtime-bridge .`: the bridge alone (the last stage), `realtime-bridge serve` on
# port 8787, in-memory unless BRIDGE_REDIS_URL is set (then BRIDGE_SECRET_KEY too).
# `--target demo`: the demo's tasks and page as well. compose.yaml runs Redis, the bridge, a worker
# and the demo.

# The wheel, built from the package's sources only.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml MANIFEST.in README.md LICENSE CHANGELOG.md ./
COPY bridge ./bridge
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# The demo page, built with the hooks of js-hooks/.
FROM node:20-slim AS web
WORKDIR /src
COPY js-hooks ./js-hooks
RUN cd js-hooks && npm ci --no-audit --no-fund && npm run build
COPY examples/demo/web ./examples/demo/web
RUN cd examples/demo/web && npm ci --no-audit --no-fund && npm run build

# The installed package, run by an unprivileged user.
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 bridge
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels pip install --no-cache-dir /wheels/*.whl
WORKDIR /app
USER bridge
EXPOSE 8787

# The demo (`python -m examples.demo`: the bridge, the demo's backend routes and its page); also the
# image of a worker running the demo's tasks (`realtime-bridge worker --tasks examples/demo/tasks.py`).
FROM runtime AS demo
COPY examples/demo/*.py ./examples/demo/
COPY --from=web /src/examples/demo/web/dist ./examples/demo/web/dist
ENV HOST=0.0.0.0 PORT=8787
CMD ["python", "-m", "examples.demo"]

# The bridge alone: the default target.
FROM runtime AS bridge
CMD ["realtime-bridge", "serve", "--host", "0.0.0.0", "--port", "8787"]
