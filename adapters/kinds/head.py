"""``head``: a linear/MLP head on the frozen trunk's features (``head.safetensors``).

Heads are tiny and stay resident; every head task of a request reads the same plain
trunk row per input.
"""

from __future__ import annotations

from adapters.format.safetensors_io import load_tensors
from adapters.kinds.base import AdapterKind
from adapters.kinds.trunk import COMPOSED_TRUNK
from adapters.tasks import task_type


class HeadKind(AdapterKind):
    name = "head"
    weight_files = ("head.safetensors",)
    evictable = False
    shares_trunk_row = True
    trunk_pass = COMPOSED_TRUNK

    def check(self, adir, m, backbone, plan) -> None:
        task_type(m.task_type).check_head(m, adir.headers["head.safetensors"], backbone)

    def load(self, adir, m, backbone, plan):
        return load_tensors(adir.path / "head.safetensors"), None
