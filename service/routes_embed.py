"""``POST /embed``: a backbone's pooled features, batched with every other request.

The rows join the same batcher as ``/predict``: an embedding request next to predictions
on the same backbone shares their trunk pass (see :mod:`adapters.runtime`).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from adapters.embed_spec import EmbedSpec
from service.routes_common import Svc, deferred_inputs, json_response, observed
from service.schemas import ERROR_RESPONSES, EmbedRequest, EmbedResponse

router = APIRouter()


@router.post("/embed", response_model=EmbedResponse, responses=ERROR_RESPONSES)
async def embed(body: EmbedRequest, svc: Svc) -> Response:
    """Pooled features of texts or base64 images (pooling and L2 normalisation as heads use them)."""
    async with observed(svc, "embed"):
        modality, items = body.modality_and_items()
        bb = svc.engine.backbone(body.backbone, modality)
        decode = deferred_inputs(svc, items, modality)  # decoded once admitted (service.admission)
        spec = EmbedSpec(body.pooling, body.normalize)
        vectors = (await svc.engine.embed(bb.name, decode, modality, spec)).embeddings  # [inputs, hidden]
        svc.metrics.observe_embedded(bb.name, len(items))
        return json_response(EmbedResponse(
            backbone=bb.name, pooling=body.pooling or bb.default_pooling, normalized=body.normalize,
            dimensions=int(vectors.shape[1]), embeddings=vectors.tolist()))
