"""Reading a PEFT LoRA adapter into per-module low-rank factors for our runtime.

The plan (which backbone module each key adapts, with which shapes) is made from the
safetensors *header* and ``adapter_config.json`` alone, so every problem is found
before a tensor is loaded (a dry run, as PEFT's hotswap does). Scaling
(``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA, per-module patterns honoured) is
folded into ``B`` once at load.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from adapters.errors import IncompatibleAdapter, InvalidAdapter
from adapters.format.safetensors_io import load_tensors
from adapters.lora.pattern_compile import check_pattern_keys
from adapters.tasks import peft_task_types

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")
_UNSUPPORTED_FLAGS = {
    "use_dora": "DoRA", "lora_bias": "LoRA bias", "layer_replication": "layer replication",
    "trainable_token_indices": "trainable tokens", "target_parameters": "target_parameters",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D) layers", "use_qalora": "QALoRA",
}
# PEFT ``task_type`` values whose meaning the runtime reproduces: a sequence classifier on
# pooled features (SEQ_CLS) or a trunk adapter under our own head (FEATURE_EXTRACTION, or
# none), plus those a task type claims (``TaskType.peft_task_types``: TOKEN_CLS).
# CAUSAL_LM, QUESTION_ANS... have generative or span heads: serving them as a classifier
# would answer with meaningless scores.
SUPPORTED_PEFT_TASK_TYPES = (None, "SEQ_CLS", "FEATURE_EXTRACTION")
# The only ``modules_to_save`` weights the runtime applies: a linear sequence classifier.
_HEAD_EXTRAS = {"classifier.weight", "classifier.bias", "score.weight", "score.bias"}


@dataclass
class LoraModule:
    """One adapted module: ``delta(x) = x @ A.T @ B.T`` with scaling folded into ``B``."""

    A: torch.Tensor  # [r, in]
    B: torch.Tensor  # [out, r]
    conv: bool = False  # a convolution: A is [r, in * kh * kw] (the unfolded patch)

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


@dataclass
class LoraPlan:
    """Where each LoRA key lands on the backbone, checked against shapes (no tensors)."""

    modules: dict[str, dict]  # backbone module name -> {"A": key, "B": key, "orig": name, "conv": bool}
    extras: dict[str, str] = field(default_factory=dict)  # normalised modules_to_save name -> file key


@dataclass
class LoraWeights:
    """A loaded LoRA adapter: per-module factors plus any ``modules_to_save`` tensors."""

    modules: dict[str, LoraModule]
    extras: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        n = sum(m.A.numel() * m.A.element_size() + m.B.numel() * m.B.element_size()
                for m in self.modules.values())
        return n + sum(t.numel() * t.element_size() for t in self.extras.values())

    def to(self, device, dtype) -> "LoraWeights":
        mods = {k: LoraModule(m.A.to(device, dtype), m.B.to(device, dtype), m.conv)
                for k, m in self.modules.items()}
        return LoraWeights(mods, self.extras)


def check_peft_config(config: dict) -> None:
    problems = []
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}; only LORA adapters are served")
    task_type = config.get("task_type")
    supported = (*SUPPORTED_PEFT_TASK_TYPES, *peft_task_types())  # + those task types claim (TOKEN_CLS)
    if task_type not in supported:
        problems.append(f"task_type {task_type!r} is not supported (supported: "
                        f"{', '.join(t for t in supported if t)}, or none); another PEFT task "
                        "would be served as something it is not")
    if config.get("bias", "none") not in (None, "none"):
        problems.append(f"bias {config.get('bias')!r} is not supported (LoRA bias weights are "
                        "not applied by the runtime); train with bias='none'")
    for key, what in _UNSUPPORTED_FLAGS.items():
        if config.get(key):
            problems.append(f"{what} ({key}) is not supported by the per-row LoRA runtime")
    if not _positive_int(config.get("r", 8)):
        problems.append(f"r must be a positive integer, got {config.get('r')!r}")
    if not _finite_number(config.get("lora_alpha", 8)):
        problems.append(f"lora_alpha must be a finite number, got {config.get('lora_alpha')!r}")
    for field_name in ("alpha_pattern", "rank_pattern"):
        problems += _check_patterns(field_name, config.get(field_name))
    InvalidAdapter.collect(problems, "adapter_config.json")


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_patterns(field_name: str, patterns) -> list[str]:
    """``{module regex: number}`` as PEFT writes it; a bad regex is the adapter's fault, not ours."""
    if patterns in (None, {}):
        return []
    if not isinstance(patterns, dict) or len(patterns) > 1024:
        return [f"{field_name} must be an object of at most 1024 {{module pattern: number}} entries"]
    problems = check_pattern_keys(field_name, list(patterns))
    for key, value in patterns.items():
        if not _finite_number(value):
            problems.append(f"{field_name}[{key!r}] must be a finite number, got {value!r}")
        elif field_name == "rank_pattern" and not _positive_int(value):
            problems.append(f"rank_pattern[{key!r}] must be a positive integer, got {value!r}")
    return problems[:10]


def _resolve_module(model: nn.Module, name: str, prefix: str) -> tuple[str, nn.Module] | None:
    modules = dict(model.named_modules())
    if name in modules:
        return name, modules[name]
    # A PEFT adapter saved on e.g. BertForSequenceClassification names 'bert.encoder...'.
    if prefix and name.startswith(prefix + "."):
        short = name[len(prefix) + 1:]
        if short in modules:
            return short, modules[short]
    return None


def _normalise_extra(key: str) -> str:
    key = key.removeprefix("base_model.model.")
    return re.sub(r"\.modules_to_save\.[A-Za-z0-9_-]+\.", ".", key)


def plan_lora(header: dict[str, tuple], model: nn.Module, prefix: str) -> LoraPlan:
    """Map every tensor in an adapter's header onto ``model``; raise listing all problems."""
    pairs: dict[str, dict] = {}
    extras: dict[str, str] = {}
    problems: list[str] = []
    unapplied: list[str] = []  # weights we would silently ignore: refuse instead
    for key in header:
        if "lora_embedding" in key or "lora_magnitude" in key:
            problems.append(f"{key}: embedding/DoRA LoRA weights are not supported")
            continue
        m = _LORA_KEY.match(key)
        if m is None:
            if ".original_module." not in key:
                extras[_normalise_extra(key)] = key
                if _normalise_extra(key) not in _HEAD_EXTRAS:
                    unapplied.append(f"{key}: modules_to_save weights other than a linear "
                                    "'classifier'/'score' are not applied by the runtime")
            continue
        pairs.setdefault(m["module"], {})[m["ab"]] = key
    modules: dict[str, dict] = {}
    for orig, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            problems.append(f"{orig}: has lora_{''.join(ab)} but not both lora_A and lora_B")
            continue
        found = _resolve_module(model, orig, prefix)
        if found is None:
            problems.append(f"{orig}: no such module in the backbone")
            continue
        name, mod = found
        problems += _check_shapes(orig, mod, header[ab["A"]][1], header[ab["B"]][1])
        modules[name] = {"A": ab["A"], "B": ab["B"], "orig": orig, "conv": isinstance(mod, nn.Conv2d)}
    if not pairs and not problems:
        problems.append("the adapter has no lora_A/lora_B weights")
    elif pairs and not modules and not problems:
        problems.append("the LoRA target modules match nothing in this backbone")
    InvalidAdapter.collect(unapplied[:10], "LoRA")
    IncompatibleAdapter.collect(problems[:20], "LoRA")
    return LoraPlan(modules, extras)


def _check_shapes(orig: str, mod: nn.Module, a_shape: tuple, b_shape: tuple) -> list[str]:
    if isinstance(mod, nn.Linear):
        ok_types = True
        fan_in, fan_out, tail = mod.in_features, mod.out_features, ()
    elif isinstance(mod, nn.Conv2d):
        if mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            return [f"{orig}: LoRA on a conv with groups {mod.groups}, padding {mod.padding!r} "
                    f"({mod.padding_mode}) is not supported; target groups-1 convolutions with "
                    "numeric zero padding"]
        ok_types = True
        fan_in, fan_out, tail = mod.in_channels, mod.out_channels, tuple(mod.kernel_size)
    else:
        ok_types = False
    if not ok_types:
        return [f"{orig}: is a {type(mod).__name__}; LoRA is supported on Linear and Conv2d"]
    if len(a_shape) != 2 + len(tail) or len(b_shape) != 2 + len(tail):
        return [f"{orig}: lora_A {a_shape} / lora_B {b_shape} have the wrong number of dimensions"]
    r = a_shape[0]
    b_tail = (1, 1) if tail else ()  # PEFT's conv lora_B is 1x1 whatever the kernel
    if tuple(a_shape[1:]) != (fan_in, *tail) or tuple(b_shape) != (fan_out, r, *b_tail):
        return [f"{orig}: lora_A {tuple(a_shape)} / lora_B {tuple(b_shape)} do not fit a layer "
                f"with {fan_in} inputs and {fan_out} outputs"]
    return []


def load_lora_weights(path: Path, config: dict, plan: LoraPlan) -> LoraWeights:
    """Load the factors named by ``plan`` and fold each module's scaling into ``B``.

    Each module's ``r`` and ``alpha`` were resolved at planning
    (:func:`adapters.lora.patterns.resolve_plan`): no pattern is matched here.
    """
    tensors = load_tensors(path)
    modules = {}
    for name, p in plan.modules.items():
        A, B = tensors[p["A"]], tensors[p["B"]]
        r, alpha = p["r"], p["alpha"]  # r == A.shape[0], checked at planning
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        modules[name] = LoraModule(A.reshape(r, -1).contiguous(),
                                   (B.reshape(B.shape[0], r) * scaling).contiguous(), p["conv"])
    extras = {name: tensors[key] for name, key in plan.extras.items()}
    return LoraWeights(modules, extras)
