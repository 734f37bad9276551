"""What the protocol route modules share: the service instance, input decoding, metrics.

Routes in :mod:`service.routes_embed`, :mod:`service.routes_openai` and
:mod:`service.routes_v2` are plain functions on an ``APIRouter``; they reach the one
:class:`service.service.Taskswap` instance (its engine, limits and metrics) through
BentoML's ``get_current_service`` dependency, as the class's own routes do.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from bentoml import get_current_service
from fastapi import Depends

from adapters.errors import TaskswapError
from service.errors import status_for
from service.inputs import check_count, check_texts, decode_base64_image

Svc = Annotated[Any, Depends(get_current_service)]


@asynccontextmanager
async def observed(svc, api: str):
    """Time one request of an API family and count it by final status (4xx/5xx included)."""
    start, outcome = time.perf_counter(), {"status": 500}
    try:
        yield outcome
        outcome["status"] = 200
    except TaskswapError as exc:
        outcome["status"] = status_for(exc)[0]
        raise
    finally:
        svc.metrics.observe_api(api, outcome["status"], time.perf_counter() - start)


async def decode_inputs(svc, texts: list[str] | None, images: list[str] | None,
                        what: tuple[str, str] = ("texts", "images")) -> tuple[list, str]:
    """Checked texts or decoded base64 images (in a worker thread) and their modality."""
    if texts is not None:
        check_count(len(texts), what[0], svc.limits)
        return check_texts(texts, svc.limits), "text"
    images = images or []
    check_count(len(images), what[1], svc.limits)
    decoded = await anyio.to_thread.run_sync(lambda: [
        decode_base64_image(b64, f"{what[1]}[{i}]", svc.limits) for i, b64 in enumerate(images)])
    return decoded, "image"
