"""A typed Python client for a Taskswap server, sync and async, importable without torch.

    from taskswap_client import Client
    with Client("http://127.0.0.1:3000", token="...") as ts:
        ts.wait_ready()
        print(ts.predict("sentiment", texts=["a great movie"]).results[0].predictions[0].label)
        vectors = ts.embed(texts=["a great movie"]).embeddings
        print(ts.generate("translate-fr", prompt="Good morning").text)
        for event in ts.stream("chat", messages=[{"role": "user", "content": "Hi"}]):
            print(event)  # TokenDelta(text=...)..., then StreamEnd(finish_reason=..., usage=...)

Results are the service's own pydantic response models (:mod:`service.schemas`, which
imports nothing but pydantic). Every call sends the bearer token, has a timeout, and
retries with exponential back-off on 429/503 (honouring ``Retry-After``) and on
connection failures before anything was sent. Refusals raise a typed
:class:`TaskswapHTTPError` subclass (:class:`InvalidRequest`, :class:`TaskNotFound`,
:class:`OverCapacity`, ...).
"""

from taskswap_client.client import AsyncClient, Client
from taskswap_client.dense import DenseAnswer, Detection, Mask
from taskswap_client.errors import (Conflict, GenerationFailed, GenerationTimeout, InvalidRequest, OverCapacity,
                                    TaskNotFound, TaskswapHTTPError, Unauthorized)
from taskswap_client.generation import (GeneratedToken, GenerationResult, StreamEnd, StreamEvent, TokenDelta,
                                        Usage)
from taskswap_client.transport import TaskswapResponseError, TaskswapTimeout
from taskswap_client.models import (AdapterInfo, AdapterList, BackboneList, DeleteResponse,
                                    EmbedResponse, PredictResponse, RegisterResponse, SharedSetInfo,
                                    SharedSetList)

__all__ = ["AdapterInfo", "AdapterList", "AsyncClient", "BackboneList", "Client", "Conflict", "DeleteResponse",
           "DenseAnswer", "Detection", "EmbedResponse", "GeneratedToken", "GenerationFailed", "GenerationResult", "GenerationTimeout",
           "InvalidRequest", "Mask", "OverCapacity", "PredictResponse", "RegisterResponse", "SharedSetInfo",
           "SharedSetList", "StreamEnd", "StreamEvent",
           "TaskNotFound", "TaskswapHTTPError", "TaskswapResponseError", "TaskswapTimeout", "TokenDelta",
           "Unauthorized", "Usage"]
