"""LoRA adapters in PEFT format, applied per row inside one backbone pass."""

from adapters.lora.batch import LoraBatch, ensure_hooked, use_lora_batch
from adapters.lora.weights import LoraModule, LoraWeights, load_lora_weights, plan_lora

__all__ = ["LoraBatch", "LoraModule", "LoraWeights", "ensure_hooked", "load_lora_weights",
           "plan_lora", "use_lora_batch"]
