"""Shared pytest setup: offline model loading and the ``real`` marker."""

import os

# Nothing in the test suite may reach a model hub; set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real: uses the real embedded backbones (slower; deselect with -m 'not real')"
    )


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-backbones")


@pytest.fixture(scope="session")
def text_backbone(tiny_dir):
    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    return load_backbone(tiny_backbone_spec("text", tiny_dir / "text"))


@pytest.fixture(scope="session")
def vision_backbone(tiny_dir):
    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    return load_backbone(tiny_backbone_spec("vision", tiny_dir / "vision"))


@pytest.fixture
def backbones(text_backbone, vision_backbone):
    return {"text": text_backbone, "vision": vision_backbone}


@pytest.fixture
def registry(tmp_path, backbones):
    from adapters.registry import Registry
    from adapters.store import open_store
    reg = Registry(open_store(str(tmp_path / "store")), backbones)
    reg.sync()
    return reg


@pytest.fixture
def one_torch_thread():
    """Tiny forwards on a busy 2-core machine: 1 thread is ~50x faster than 2 spinning."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def lm_backbone(tiny_dir):
    """A tiny random Llama causal LM with a byte-level ChatML tokenizer."""
    from adapters.backbones.causal_lm import load_lm_backbone
    from adapters.backbones.tiny import tiny_lm_spec
    return load_lm_backbone(tiny_lm_spec(tiny_dir / "lm"))
