"""``head``: a linear/MLP head on the frozen trunk's features (``head.safetensors``).

Heads are tiny and stay resident; every head task of a request reads the same plain
trunk row per input.
"""

from __future__ import annotations

from adapters.format.safetensors_io import load_tensors
from adapters.heads import check_head_header
from adapters.kinds.base import AdapterKind
from adapters.kinds.trunk import COMPOSED_TRUNK
from adapters.tasks import output_names


class HeadKind(AdapterKind):
    name = "head"
    weight_files = ("head.safetensors",)
    evictable = False
    shares_trunk_row = True
    trunk_pass = COMPOSED_TRUNK

    def check(self, adir, m, backbone, plan) -> None:
        check_head_header(m.head, len(output_names(m)), adir.headers["head.safetensors"],
                          backbone.hidden_size, backbone.head_inputs)

    def load(self, adir, m, backbone, plan):
        return load_tensors(adir.path / "head.safetensors"), None
