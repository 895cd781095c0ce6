"""The official Trigger.dev HTTP protocol, so unmodified official clients work against the bridge."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from bridge.server.official.api import (
    add_batch_items,
    cancel_run,
    create_batch,
    jwt_claims,
    reschedule_run,
    retrieve_run,
    trigger_task,
)
from bridge.server.official.feeds import batch_feed, run_feed, tag_feed
from bridge.server.official.inputs import send_input_stream
from bridge.server.official.packets import create_upload_url, download_packet, run_packet_url, upload_packet
from bridge.server.official.streams import read_stream
from bridge.server.official.waitpoints import complete_by_callback, complete_token, create_token, retrieve_token

routes: list[BaseRoute] = [
    Route("/realtime/v1/runs", tag_feed),
    Route("/realtime/v1/runs/{run_id}", run_feed),
    Route("/realtime/v1/batches/{batch_id}", batch_feed),
    Route("/realtime/v1/streams/{run_id}/input/{stream_id}", send_input_stream, methods=["POST"]),
    Route("/realtime/v1/streams/{run_id}/{key}", read_stream),
    Route("/api/v1/tasks/{task_id}/trigger", trigger_task, methods=["POST"]),
    Route("/api/v3/batches", create_batch, methods=["POST"]),
    Route("/api/v3/batches/{batch_id}/items", add_batch_items, methods=["POST"]),
    Route("/api/v3/runs/{run_id}", retrieve_run),
    Route("/api/v2/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    Route("/api/v1/runs/{run_id}/reschedule", reschedule_run, methods=["POST"]),
    Route("/api/v1/runs/{run_id}/packets/{field}", run_packet_url),
    Route("/api/v2/packets/{filename:path}", create_upload_url, methods=["PUT"]),
    Route("/packets/{path:path}", upload_packet, methods=["PUT"]),
    Route("/packets/{path:path}", download_packet),
    Route("/api/v1/auth/jwt/claims", jwt_claims, methods=["POST"]),
    Route("/api/v1/waitpoints/tokens", create_token, methods=["POST"]),
    Route("/api/v1/waitpoints/tokens/{token_id}", retrieve_token),
    Route("/api/v1/waitpoints/tokens/{token_id}/complete", complete_token, methods=["POST"]),
    Route("/api/v1/waitpoints/tokens/{token_id}/callback/{signature}", complete_by_callback, methods=["POST"]),
]
