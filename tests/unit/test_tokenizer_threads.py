"""A text backbone's tokenizer shared by two threads at once — the batch worker padding a batch,
and a request's cost estimate counting its windows before it is queued — never pads one call
to the other's settings (a fast tokenizer keeps padding and truncation in shared state)."""

from __future__ import annotations

import threading

from adapters.backbones.base import load_backbone
from adapters.backbones.tiny import tiny_backbone_spec


def test_padding_and_window_counting_in_two_threads(tmp_path):
    pre = load_backbone(tiny_backbone_spec("text", tmp_path / "text")).preprocessor
    batch = ["a short text", "a somewhat longer text with a few more words in it", "x"]
    errors: list[BaseException] = []

    def pad():
        try:
            for _ in range(300):
                enc = pre(batch)
                assert enc["input_ids"].shape[0] == len(batch)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    def count():
        try:
            for _ in range(300):
                pre.window_lengths(["one", "two words here", "word " * 80])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=pad), threading.Thread(target=count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
