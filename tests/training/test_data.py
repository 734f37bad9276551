"""Labelled data: file loaders, their errors, demo data sets, seeded stratified cuts."""

import json
from pathlib import Path

import pytest
from PIL import Image

from adapters.errors import InvalidInput, NotFound
from training.data import (
    DEMO_DATASETS,
    DemoDataUnavailable,
    LabelledData,
    load_demo,
    load_image_csv,
    load_image_folder,
    load_text_table,
    open_image,
    stratified_sample,
    stratified_split,
    take_per_class,
)
from training.data import demo


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def png(path: Path, color=(255, 0, 0), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (6, 5), color).save(path)
    return path


def toy(labels, names=("a", "b", "c")) -> LabelledData:
    return LabelledData("text", [f"t{i}" for i in range(len(labels))], list(labels), list(names), "toy")


# --- LabelledData and cuts ---------------------------------------------------------------


def test_labelled_data_basics():
    d = toy([0, 1, 1, 2, 1])
    assert len(d) == 5
    assert d.class_counts() == {"a": 1, "b": 3, "c": 1}
    s = d.subset([4, 0])
    assert s.inputs == ["t4", "t0"] and s.labels == [1, 0] and s.label_names == d.label_names
    assert s.source == d.source
    assert toy([0, 0]).class_counts() == {"a": 2, "b": 0, "c": 0}


def test_labelled_data_rejects_inconsistent():
    with pytest.raises(InvalidInput, match="inputs but"):
        LabelledData("text", ["a"], [0, 1], ["x", "y"], "s")
    with pytest.raises(InvalidInput, match="outside"):
        LabelledData("text", ["a"], [2], ["x", "y"], "s")
    with pytest.raises(InvalidInput, match="modality"):
        LabelledData("video", ["a"], [0], ["x", "y"], "s")


def test_open_image(tmp_path):
    gray = Image.new("L", (3, 3), 7)
    assert open_image(gray).mode == "RGB"
    rgb = Image.new("RGB", (3, 3))
    assert open_image(rgb) is rgb
    p = png(tmp_path / "x.png", (0, 0, 0, 0), mode="RGBA")
    im = open_image(p)
    assert im.mode == "RGB" and im.size == (6, 5)
    assert open_image(str(p)).size == (6, 5)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InvalidInput, match="bad.png"):
        open_image(bad)


def test_stratified_split():
    d = toy([0] * 50 + [1] * 30 + [2] * 20)
    a, b = stratified_split(d, 0.8, seed=3)
    assert a.class_counts() == {"a": 40, "b": 24, "c": 16}
    assert b.class_counts() == {"a": 10, "b": 6, "c": 4}
    assert set(a.inputs).isdisjoint(b.inputs) and len(a) + len(b) == len(d)
    a2, b2 = stratified_split(d, 0.8, seed=3)
    assert a2.inputs == a.inputs and b2.inputs == b.inputs  # deterministic
    a3, _ = stratified_split(d, 0.8, seed=4)
    assert a3.inputs != a.inputs  # the seed matters
    # A class of two still lands on both sides.
    a4, b4 = stratified_split(toy([0] * 10 + [1] * 2, ["x", "y"]), 0.9, seed=0)
    assert a4.class_counts()["y"] == 1 and b4.class_counts()["y"] == 1
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(InvalidInput, match="fraction"):
            stratified_split(d, bad, seed=0)


def test_take_per_class():
    d = toy([0] * 10 + [1] * 3 + [2] * 1)
    t = take_per_class(d, 4, seed=0)
    assert t.class_counts() == {"a": 4, "b": 3, "c": 1}
    assert take_per_class(d, 4, seed=0).inputs == t.inputs
    assert take_per_class(d, 4, seed=1).inputs != t.inputs
    assert take_per_class(d, 100, seed=0).inputs == d.inputs
    with pytest.raises(InvalidInput):
        take_per_class(d, 0)


def test_stratified_sample():
    d = toy([0] * 90 + [1] * 9 + [2] * 1)
    s = stratified_sample(d, 10, seed=0)
    assert len(s) == 10
    counts = s.class_counts()
    assert counts["c"] == 1 and counts["b"] == 1 and counts["a"] == 8  # every class kept
    assert stratified_sample(d, 10, seed=0).inputs == s.inputs
    assert len(stratified_sample(d, 1000, seed=0)) == 100
    assert len(stratified_sample(d, 2, seed=0)) == 2


# --- text tables ---------------------------------------------------------------------------


def test_load_csv(tmp_path):
    p = write_csv(tmp_path / "t.csv", 'text,label,extra\n"good, really",pos,1\nbad,neg,2\nok, pos ,3\n')
    d = load_text_table(p)
    assert d.modality == "text"
    assert d.inputs == ["good, really", "bad", "ok"]
    assert d.label_names == ["neg", "pos"] and d.labels == [1, 0, 1]
    assert "t.csv" in d.source
    # An explicit label list fixes the order.
    d2 = load_text_table(p, labels=["pos", "neg", "neutral"])
    assert d2.label_names == ["pos", "neg", "neutral"] and d2.labels == [0, 1, 0]


def test_load_csv_custom_columns_and_bom(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes("\ufeffreview;stars\n".replace(";", ",").encode("utf-8") + b"nice,5\nmeh,2\n")
    d = load_text_table(p, text_column="review", label_column="stars")
    assert d.inputs == ["nice", "meh"] and d.label_names == ["2", "5"]


def test_load_jsonl(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"text": "yes", "label": 1}, {"text": "no", "label": 0}])
    with p.open("a") as f:
        f.write("\n")  # trailing blank line is fine
    d = load_text_table(p)
    assert d.inputs == ["yes", "no"] and d.label_names == ["0", "1"] and d.labels == [1, 0]


def test_text_table_missing_and_empty_file(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        load_text_table(tmp_path / "nope.csv")
    with pytest.raises(InvalidInput, match="empty"):
        load_text_table(write_csv(tmp_path / "e.csv", ""))
    with pytest.raises(InvalidInput, match="no rows"):
        load_text_table(write_csv(tmp_path / "h.csv", "text,label\n"))
    with pytest.raises(InvalidInput, match="no records"):
        load_text_table(write_csv(tmp_path / "blank.jsonl", "\n\n"))
    with pytest.raises(InvalidInput, match=r"\.csv or \.jsonl"):
        load_text_table(write_csv(tmp_path / "t.tsv", "text\tlabel\n"))


def test_text_table_not_utf8(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes("text,label\ncaf\u00e9,a\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match="UTF-8"):
        load_text_table(p)
    q = tmp_path / "t.jsonl"
    q.write_bytes(b'{"text": "caf\xe9", "label": "a"}\n')
    with pytest.raises(InvalidInput, match="UTF-8"):
        load_text_table(q)


def test_text_table_missing_column_names_existing(tmp_path):
    p = write_csv(tmp_path / "t.csv", "sentence,label\nhi,a\n")
    with pytest.raises(InvalidInput) as err:
        load_text_table(p)
    assert "'text'" in str(err.value) and "'sentence'" in str(err.value) and "'label'" in str(err.value)
    q = write_jsonl(tmp_path / "t.jsonl", [{"sentence": "hi", "label": "a"}])
    with pytest.raises(InvalidInput) as err:
        load_text_table(q)
    assert "'text'" in str(err.value) and "'sentence'" in str(err.value)


def test_text_table_collects_all_problems(tmp_path):
    p = write_csv(tmp_path / "t.csv", "text,label\ngood,pos\n,neg\n   ,pos\nfine,\nok,neg\n")
    with pytest.raises(InvalidInput) as err:
        load_text_table(p)
    problems = err.value.problems
    assert len(problems) == 2
    assert "row 2" in problems[0] and "row 3" in problems[0] and "'text'" in problems[0]
    assert "row 4" in problems[1] and "'label'" in problems[1]


def test_text_table_bad_jsonl_lines(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "a", "label": "x"}\nnot json\n[1, 2]\n{"text": "b", "label": "y"}\n')
    with pytest.raises(InvalidInput) as err:
        load_text_table(p)
    msg = str(err.value)
    assert "invalid JSON on line 2" in msg and "not a JSON object on line 3" in msg


def test_text_table_fewer_than_two_classes(tmp_path):
    p = write_csv(tmp_path / "t.csv", "text,label\na,pos\nb,pos\n")
    with pytest.raises(InvalidInput, match="at least 2 classes"):
        load_text_table(p)
    # Two given labels, but the data only uses one of them: still not trainable.
    with pytest.raises(InvalidInput, match="at least 2 classes"):
        load_text_table(p, labels=["neg", "pos"])


def test_text_table_labels_outside_given_list(tmp_path):
    p = write_csv(tmp_path / "t.csv", "text,label\na,pos\nb,neg\nc,neutral\nd,meh\n")
    with pytest.raises(InvalidInput) as err:
        load_text_table(p, labels=["neg", "pos"])
    msg = str(err.value)
    assert "'meh'" in msg and "'neutral'" in msg and "row 3" in msg and "'pos'" not in msg.split("not in")[0]


# --- images --------------------------------------------------------------------------------


def make_folder(root: Path) -> Path:
    png(root / "cat" / "1.png", (255, 0, 0))
    png(root / "cat" / "2.PNG", (250, 0, 0))
    png(root / "dog" / "sub" / "1.png", (0, 0, 255))
    (root / "dog" / "notes.txt").write_text("ignored")
    png(root / "dog" / ".hidden.png")
    png(root / ".git" / "x.png")  # hidden folders are not classes
    return root


def test_load_image_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    d = load_image_folder(root)
    assert d.modality == "image" and d.label_names == ["cat", "dog"]
    assert d.class_counts() == {"cat": 2, "dog": 1}
    assert all(isinstance(x, Path) for x in d.inputs)
    assert open_image(d.inputs[-1]).getpixel((0, 0)) == (0, 0, 255)
    d2 = load_image_folder(root, labels=["dog", "cat", "bird"])
    assert d2.label_names == ["dog", "cat", "bird"] and d2.class_counts() == {"dog": 1, "cat": 2, "bird": 0}


def test_image_folder_errors(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(InvalidInput, match="no sub-folders"):
        load_image_folder(tmp_path)
    root = make_folder(tmp_path / "imgs")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (root / "empty").mkdir()
    with pytest.raises(InvalidInput) as err:
        load_image_folder(root)
    msg = str(err.value)
    assert "broken.jpg" in msg and "'empty'" in msg and len(err.value.problems) == 2
    (root / "cat" / "broken.jpg").unlink()
    (root / "empty").rmdir()
    with pytest.raises(InvalidInput, match="'dog'"):
        load_image_folder(root, labels=["cat", "bird"])
    one = tmp_path / "one"
    png(one / "only" / "a.png")
    with pytest.raises(InvalidInput, match="at least 2 classes"):
        load_image_folder(one)


def test_load_image_csv(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png", (0, 255, 0))
    absolute = png(tmp_path / "elsewhere" / "c.png")
    (tmp_path / "data").mkdir()
    # Relative paths are relative to the CSV's folder, not to the current directory.
    p = write_csv(tmp_path / "data" / "list.csv", f"file,cls\n../imgs/a.png,ok\n../imgs/b.png,bad\n{absolute},ok\n")
    d = load_image_csv(p, path_column="file", label_column="cls")
    assert d.label_names == ["bad", "ok"] and d.labels == [1, 0, 1]
    assert d.inputs[0] == tmp_path / "data" / "../imgs/a.png" and d.inputs[2] == absolute
    assert open_image(d.inputs[1]).getpixel((0, 0)) == (0, 255, 0)


def test_image_csv_errors(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        load_image_csv(tmp_path / "nope.csv")
    with pytest.raises(InvalidInput, match="empty"):
        load_image_csv(write_csv(tmp_path / "e.csv", ""))
    with pytest.raises(InvalidInput) as err:
        load_image_csv(write_csv(tmp_path / "c.csv", "image,label\na.png,x\n"))
    assert "'path'" in str(err.value) and "'image'" in str(err.value)

    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    p = write_csv(tmp_path / "l.csv", "path,label\na.png,x\nmissing.png,y\nbad.png,y\n,y\nb.png,\n")
    with pytest.raises(InvalidInput) as err:
        load_image_csv(p)
    msg = str(err.value)
    assert "missing.png" in msg and "bad.png" in msg and "row 4" in msg and "row 5" in msg
    assert len(err.value.problems) == 5  # empty path, empty label, not found, unreadable, 1 class

    p = write_csv(tmp_path / "m.csv", "path,label\na.png,x\nb.png,z\n")
    with pytest.raises(InvalidInput, match="'z'"):
        load_image_csv(p, labels=["x", "y"])


# --- demo data sets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, modality, classes",
    [("fashion-mnist", "image", 10), ("textile", "image", 3), ("digits", "image", 10), ("rotten-tomatoes", "text", 2)],
)
def test_demo_loads_with_limit(name, modality, classes):
    train = load_demo(name, "train", limit=40, seed=0)
    test = load_demo(name, "test", limit=30, seed=0)
    assert train.modality == test.modality == modality
    assert len(train) == 40 and len(test) == 30
    assert len(train.label_names) == classes and train.label_names == test.label_names
    assert all(c > 0 for c in train.class_counts().values())  # stratified: every class present
    assert train.source and name.split("-")[0] in train.source.lower()
    x = open_image(train.inputs[0]) if modality == "image" else train.inputs[0]
    assert (x.mode == "RGB") if modality == "image" else (isinstance(x, str) and x.strip())
    again = load_demo(name, "train", limit=40, seed=0)
    assert again.labels == train.labels
    if isinstance(train.inputs[0], (str, Path)):
        assert again.inputs == train.inputs


def test_demo_split_sizes():
    # Cheap to load whole: paths, 8x8 images and short texts.
    assert (len(load_demo("textile", "train")), len(load_demo("textile", "test"))) == (1600, 400)
    assert load_demo("textile", "test").class_counts() == {"nominal": 200, "global": 100, "local": 100}
    assert (len(load_demo("digits", "train")), len(load_demo("digits", "test"))) == (1347, 450)
    rt_train, rt_test = load_demo("rotten-tomatoes", "train"), load_demo("rotten-tomatoes", "test")
    assert len(rt_train) + len(rt_test) == 12808 and len(rt_test) == 2562
    assert rt_train.label_names == ["rotten", "fresh"]
    # Rows are split, not texts: the corpus repeats a few dozen snippets, so a handful recur.
    assert len(set(rt_train.inputs) & set(rt_test.inputs)) < 30
    # Another seed, another (still disjoint) split.
    assert load_demo("textile", "test", seed=1).inputs != load_demo("textile", "test").inputs
    assert set(load_demo("textile", "test", seed=1).inputs).isdisjoint(load_demo("textile", "train", seed=1).inputs)


def test_fashion_mnist_official_split():
    test = load_demo("fashion-mnist", "test")
    assert len(test) == 10_000 and test.class_counts()["Ankle boot"] == 1000
    assert test.label_names[0] == "T-shirt/top" and test.inputs[0].size == (28, 28)
    assert test.inputs[0].mode == "RGB"
    assert test.labels[:5] == [9, 2, 1, 1, 6]  # the well-known first labels of t10k


def test_demo_errors(monkeypatch, tmp_path):
    with pytest.raises(InvalidInput, match="fashion-mnist, textile, digits, rotten-tomatoes"):
        load_demo("mnist")
    with pytest.raises(InvalidInput, match="split"):
        load_demo("digits", "validation")
    with pytest.raises(InvalidInput, match="limit"):
        load_demo("digits", limit=0)
    monkeypatch.setattr(demo, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(DemoDataUnavailable, match="apt-get install -y dataset-fashion-mnist"):
        load_demo("fashion-mnist")
    real_find_spec = demo.importlib.util.find_spec
    monkeypatch.setattr(
        demo.importlib.util, "find_spec",
        lambda name, *a: None if name == "conformal_clip_data" else real_find_spec(name, *a),
    )
    with pytest.raises(NotFound, match="pip install conformal-clip-data"):
        load_demo("textile")


def test_demo_names():
    assert DEMO_DATASETS == ("fashion-mnist", "textile", "digits", "rotten-tomatoes", "spoken-digits")
