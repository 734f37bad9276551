"""Per-request caps on estimated work (:mod:`adapters.cost`), each a setting, each a 413
naming it, checked before anything is queued: on every inference route (``/predict``,
``/embed``, ``/v1/embeddings``, KServe v2), because they all queue through
:meth:`service.engine.Engine._submit`.

>>> from adapters.cost import Cost
>>> from service.settings import Settings
>>> check_cost(Cost((1.0,), windows=3000, audio_seconds=0.0), Settings())
Traceback (most recent call last):
...
service.errors.PayloadTooLarge: this request runs 3000 token windows; at most 2048 per request (TASKSWAP_MAX_REQUEST_TOKEN_WINDOWS): send fewer or shorter texts
"""

from __future__ import annotations

from adapters.cost import Cost
from service.errors import PayloadTooLarge


def check_cost(cost: Cost, settings) -> None:
    """Raise :class:`PayloadTooLarge` naming every cap ``cost`` passes (all at once)."""
    problems = []
    if cost.windows > settings.max_request_token_windows:
        problems.append(f"this request runs {cost.windows} token windows; at most "
                        f"{settings.max_request_token_windows} per request "
                        "(TASKSWAP_MAX_REQUEST_TOKEN_WINDOWS): send fewer or shorter texts")
    if cost.audio_seconds > settings.max_request_audio_seconds:
        problems.append(f"this request holds {cost.audio_seconds:.1f} s of audio; at most "
                        f"{settings.max_request_audio_seconds:g} s per request "
                        "(TASKSWAP_MAX_REQUEST_AUDIO_SECONDS): send fewer or shorter clips")
    if cost.total > settings.max_request_cost:
        problems.append(f"this request's estimated cost is {cost.total:,.0f} token-layers; at most "
                        f"{settings.max_request_cost:,} per request (TASKSWAP_MAX_REQUEST_COST): "
                        "send fewer inputs or tasks per request")
    PayloadTooLarge.collect(problems)
