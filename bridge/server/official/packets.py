"""The official large-payload routes (bridge/runtime/packets.py): the Node SDK uploads a payload of 128 KiB or
more as a packet before it triggers, and readers of a run fetch its packets by presigned URLs.

- `PUT /api/v2/packets/{name}` (secret key): `{"presignedUrl", "storagePath"}`, a storage path of its own;
- `PUT /packets/{path}?expires&signature`: the upload (up to 10 MiB, its type from Content-Type);
- `GET /packets/{path}?expires&signature`: the packet, with its type as Content-Type;
- `GET /api/v1/runs/{runId}/packets/{payload|output}` (read on the run): `{"presignedUrl"}` of its packet.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bridge.errors import NotFoundError, UnauthorizedError
from bridge.models import JSON_TYPE
from bridge.runtime.access import require_run_read
from bridge.server.http import bridge_of, handles_errors, json_response, principal_of, read_body


@handles_errors
async def create_upload_url(request: Request) -> Response:
    bridge = bridge_of(request)
    if not principal_of(request).is_backend:
        raise UnauthorizedError("Invalid or Missing API key")
    packets = bridge.engine.packets
    path = packets.upload_path(request.path_params["filename"])
    return json_response({"presignedUrl": packets.presigned_url("PUT", path), "storagePath": path})


def _presigned_path(request: Request) -> str:
    path: str = request.path_params["path"]
    query = request.query_params
    bridge_of(request).engine.packets.check_presigned(
        request.method, path, query.get("expires", ""), query.get("signature", "")
    )
    return path


@handles_errors
async def upload_packet(request: Request) -> Response:
    bridge = bridge_of(request)
    path = _presigned_path(request)
    data = await read_body(request, bridge.settings.limits.max_packet_bytes)
    data_type = (request.headers.get("content-type") or JSON_TYPE).split(";")[0].strip()
    await bridge.engine.packets.put(path, data, data_type)
    return Response(status_code=200)


@handles_errors
async def download_packet(request: Request) -> Response:
    data, data_type = await bridge_of(request).engine.packets.get(_presigned_path(request))
    return Response(data, media_type=data_type)


@handles_errors
async def run_packet_url(request: Request) -> Response:
    bridge = bridge_of(request)
    run = await bridge.engine.retrieve(request.path_params["run_id"])
    require_run_read(principal_of(request), run)
    field = request.path_params["field"]
    path = {"payload": run.payload_packet, "output": run.output_packet}.get(field)
    if path is None:
        raise NotFoundError(f"run {run.id} has no {field[:40]} packet")
    return json_response({"presignedUrl": bridge.engine.packets.presigned_url("GET", path)})
