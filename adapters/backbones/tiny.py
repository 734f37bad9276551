"""Tiny randomly initialised backbones for tests: real HF folders, built offline in seconds.

They load through exactly the same ``AutoModel`` path as a real backbone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (BertConfig, BertModel, BertTokenizerFast, LlamaConfig, LlamaForCausalLM,
                          MobileNetV2Config, MobileNetV2Model, PreTrainedTokenizerFast)
# The PIL processor: the default one wants torchvision, which must never be installed here.
from transformers import MobileNetV2ImageProcessorPil as MobileNetV2ImageProcessor

from adapters.backbones.audio_model import SpeechEmbeddingConfig, SpeechEmbeddingModel
from adapters.backbones.base import BackboneSpec

_WORDS = ("good great fine love best happy nice fun excellent bad awful poor hate worst sad "
          "boring terrible movie film plot actor story the a is was and it this not very "
          "of to in").split()
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_text_model(seed: int = 0):
    """A 2-layer BERT with hidden size 32 (with pooler), seeded."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(_SPECIAL) + len(_WORDS) + 26, hidden_size=32,
                     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64)
    return BertModel(cfg).eval()


def tiny_vision_model(seed: int = 0):
    """A narrow MobileNetV2 (depth multiplier 0.25, 32 px), seeded."""
    torch.manual_seed(seed)
    cfg = MobileNetV2Config(depth_multiplier=0.25, image_size=32, tf_padding=False,
                            layer_norm_eps=1e-5, finegrained_output=False)
    model = MobileNetV2Model(cfg).eval()
    # transformers' default init (std 0.02) shrinks activations through 17 blocks to ~1e-27:
    # He init keeps pooled features at unit scale, so heads can tell images apart.
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return model


def tiny_audio_model(seed: int = 0):
    """A narrow speech_embedding (8 channels, 16-d), seeded: a standard Hann/mel front end
    and He-initialised convolutions with small random biases."""
    torch.manual_seed(seed)
    model = SpeechEmbeddingModel(SpeechEmbeddingConfig(channels=[8] * 19 + [16])).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.1)
    return model


# ChatML, as SmolLM2-Instruct (and Qwen) write it.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
_LM_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (GPT-2's byte-level alphabet) plus ChatML's special tokens: any
    text round-trips exactly, so stop sequences and offsets are testable."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(_LM_SPECIAL + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": _LM_SPECIAL[1:]})
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_lm_model(seed: int = 0, vocab_size: int = 259):
    """A 2-layer Llama (hidden 32, 4 heads, 2 KV heads), seeded. A wide initialisation
    (std 0.2) spreads the logits, so greedy choices are never near-ties."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, initializer_range=0.2, tie_word_embeddings=False,
                      bos_token_id=0, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def write_tiny_lm_backbone(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny Llama causal LM and a byte-level ChatML tokenizer into ``folder`` (idempotent)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tok = _byte_tokenizer()
    tok.save_pretrained(folder)
    tiny_lm_model(seed, vocab_size=len(tok)).save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_lm_spec(folder: str | Path, name: str = "lm", seed: int = 0) -> BackboneSpec:
    """Write a tiny causal LM into ``folder`` and return a spec for it."""
    return BackboneSpec(name=name, source=str(write_tiny_lm_backbone(folder, seed)))


def write_tiny_text_backbone(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny BERT and a word-level tokenizer into ``folder`` (idempotent)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(_SPECIAL + list(_WORDS) + [chr(c) for c in range(97, 123)]) + "\n")
    # ``vocab=`` (not ``vocab_file=``, which transformers 5 ignores: every word became [UNK]).
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    assert tok("good")["input_ids"][1] != tok.unk_token_id, "tiny tokenizer lost its vocabulary"
    tok.save_pretrained(folder)
    tiny_text_model(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_vision_backbone(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny MobileNetV2 and an image processor config into ``folder`` (idempotent)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    MobileNetV2ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                              ).save_pretrained(folder)
    tiny_vision_model(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_audio_backbone(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny speech_embedding into ``folder`` (idempotent)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tiny_audio_model(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_backbone_spec(kind: str, folder: str | Path, name: str | None = None, seed: int = 0) -> BackboneSpec:
    """Write a tiny backbone of ``kind`` ('text' | 'vision' | 'audio') and return a spec for it."""
    if kind == "audio":
        path = write_tiny_audio_backbone(folder, seed)
        return BackboneSpec(name=name or "audio", source=str(path))
    if kind == "text":
        path = write_tiny_text_backbone(folder, seed)
        return BackboneSpec(name=name or "text", source=str(path), max_length=32)
    path = write_tiny_vision_backbone(folder, seed)
    return BackboneSpec(name=name or "vision", source=str(path), image_size=32)
