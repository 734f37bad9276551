"""The typed results: the very models the service answers with (no copy to drift)."""

from service.schemas import (AdapterInfo, AdapterList, BackboneList, DeleteResponse,  # noqa: F401
                             EmbedRequest, EmbedResponse, ErrorResponse, PredictRequest,
                             PredictResponse, RegisterResponse)
from service.shared_set_schemas import (SetState, SetVersion, SharedSetInfo, SharedSetList,  # noqa: F401
                                       SharedSetSummary)
