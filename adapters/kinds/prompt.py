"""``prompt``: a generation task with no weights of its own (only ``adapter.json``).

Its manifest's ``generation`` settings (prompt template or system prompt, stop sequences,
limits) are the whole task; it decodes on the base language model. Tiny: always resident.
"""

from __future__ import annotations

from adapters.errors import InvalidAdapter
from adapters.kinds.base import AdapterKind
from adapters.kinds.trunk import COMPOSED_TRUNK
from adapters.tasks import task_type


class PromptKind(AdapterKind):
    name = "prompt"
    weight_files = ()
    evictable = False
    shares_trunk_row = False
    trunk_pass = COMPOSED_TRUNK  # never reached: generation tasks decode in adapters.generation

    def check(self, adir, m, backbone, plan) -> None:
        if not task_type(m.task_type).generates:
            raise InvalidAdapter(f"kind 'prompt' holds no weights: it serves generation tasks only, "
                                 f"not {m.task_type!r}")

    def load(self, adir, m, backbone, plan):
        return {}, None
