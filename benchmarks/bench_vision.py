"""Vision models against ONNX Runtime: ResNet-50 (the ONNX backend's light model, random weights),
a MobileNet-like depthwise-separable net and MobileNet v2 (torchvision's layout, ReLU6 as
PyTorch exports it: Clip(0, 6)), batch 1 and 8 at 224 x 224, 1 and 2 threads. EfficientNet-B0's
layout and MobileNet v3 large (HardSwish, HardSigmoid gates) run when named (--models
efficientnet-b0,mobilenet-v3); with --light, the other light models too
(AlexNet, DenseNet-121, Inception v1 / v2, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512: random
weights, batch 1, the batch they were exported with).

Each system runs in a process of its own (ORT's spinning threads would steal the cores of
whatever runs next), rounds alternating the two; a system's time is the median of its runs (at
least 10, 5 at batch 8, and as many as fill a second) in its best round, and the ratio is rlx
time / ORT time (below 1: rlx faster).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_vision.py [--threads 1,2] [--batches 1,8] [--rounds 2] [--light] [--models mobilenet-v2,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import fmt_ratio, header, rows_table  # noqa: E402

ROOT = os.path.join(os.path.dirname(HERE), "target", "bench-models", "vision")


#: The ONNX backend's light models beside ResNet-50 (fixed batch 1).
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "shufflenet", "squeezenet", "vgg19", "zfnet512"]


def resnet50(path: str) -> None:
    light("resnet50", path)


def light(name: str, path: str) -> None:
    """A light model with its constant weights replaced by random ones (He-scaled). The shipped
    models make every weight with a ConstantOfShape node (all one value): each becomes an
    initializer of random values. ResNet-50 gets a symbolic batch."""
    import onnx
    from onnx import TensorProto, numpy_helper

    src = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    m = onnx.load(src)
    rng = np.random.default_rng(0)
    shapes = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    keep, weights = [], []
    for n in m.graph.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None)
        if n.op_type == "ConstantOfShape" and n.input[0] in shapes and value is not None and value.data_type == TensorProto.FLOAT:
            weights.append((n.output[0], tuple(int(d) for d in shapes[n.input[0]])))
        else:
            keep.append(n)
    for w, shape in weights:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        r = rng.standard_normal(shape) * (np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.1)
        # Keep BN scales / variances positive (ResNet-50's by name; elsewhere every 1-D weight).
        if "_bn_s_" in w or "_bn_riv_" in w or (name != "resnet50" and len(shape) == 1):
            r = 1.0 + 0.1 * np.abs(r)
        m.graph.initializer.append(numpy_helper.from_array(r.astype(np.float32), w))
    del m.graph.node[:]
    m.graph.node.extend(keep)
    # The shape initializers fed only the removed nodes (they are graph inputs too).
    used = {i for n in keep for i in n.input}
    live = [t for t in m.graph.initializer if t.name in used]
    inputs = [v for v in m.graph.input if v.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(live)
    del m.graph.input[:]
    m.graph.input.extend(inputs)
    if name == "resnet50":
        _batch_symbolic(m)
    onnx.save(m, path)


def mobilenet(path: str, width: int = 32, blocks: int = 6) -> None:
    """Conv 3x3 / 2 then depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, Relu),
    global average pooling and a classifier."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits, nodes = [], []

    def weight(name: str, shape: tuple) -> str:
        fan_in = int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name))
        return name

    def conv(x: str, name: str, cin: int, cout: int, k: int, stride: int, groups: int = 1) -> str:
        w = weight(name + ".w", (cout, cin // groups, k, k))
        b = weight(name + ".b", (cout, 1))
        inits[-1] = numpy_helper.from_array(np.zeros(cout, np.float32), name + ".b")
        p = k // 2
        nodes.append(helper.make_node("Conv", [x, w, b], [name], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[p] * 4, group=groups))
        nodes.append(helper.make_node("Relu", [name], [name + ".r"]))
        return name + ".r"

    x, c = conv("input", "stem", 3, width, 3, 2), width
    for i in range(blocks):
        stride = 2 if i % 2 == 0 else 1
        x = conv(x, f"dw{i}", c, c, 3, stride, groups=c)
        x = conv(x, f"pw{i}", c, 2 * c if stride == 2 else c, 1, 1)
        c = 2 * c if stride == 2 else c
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    nodes.append(helper.make_node("Gemm", ["flat", weight("fc.w", (1000, c)), weight("fc.b", (1000, 1))], ["logits"], transB=1))
    inits[-1] = numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b")
    g = helper.make_graph(nodes, "mobilenet_like", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


class _Net:
    """An ONNX graph under construction for the inverted-residual nets: random He-scaled
    convolution weights and biases (BatchNorm folded), activations as PyTorch exports them,
    squeeze-excitations. The input is `input`, [batch, 3, 224, 224]."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.inits: List[Any] = []
        self.nodes: List[Any] = []

    def node(self, op: str, inputs: List[str], out: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        if name not in {t.name for t in self.inits}:
            self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def act(self, x: str, act: str) -> str:
        """`relu`, `relu6` (a Clip(0, 6)), `silu` (a Sigmoid then Mul), `hswish` (HardSwish),
        or "" for none."""
        if act == "relu":
            return self.node("Relu", [x], x + ".r")
        if act == "relu6":
            return self.node("Clip", [x, self.const("zero", 0.0), self.const("six", 6.0)], x + ".r6")
        if act == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x], x + ".sg")], x + ".silu")
        if act == "hswish":
            return self.node("HardSwish", [x], x + ".hs")
        return x

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int, groups: int = 1, act: str = "") -> str:
        fan_in = cin // groups * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
        self.const(name + ".w", w)
        self.const(name + ".b", self.rng.standard_normal(cout) * 0.1)
        self.node("Conv", [x, name + ".w", name + ".b"], name, kernel_shape=[k, k], strides=[stride, stride],
                  pads=[k // 2] * 4, group=groups)
        return self.act(name, act)

    def squeeze_excite(self, x: str, name: str, c: int, squeezed: int, inner: str, gate: str) -> str:
        """x * gate(expand(inner(reduce(mean(x))))): `gate` "sigmoid" or "hsigmoid" (HardSigmoid
        with PyTorch's 1/6, 1/2)."""
        s = self.node("GlobalAveragePool", [x], name + ".gap")
        s = self.conv(self.conv(s, name + ".r", c, squeezed, 1, 1, act=inner), name + ".e", squeezed, c, 1, 1)
        if gate == "sigmoid":
            s = self.node("Sigmoid", [s], name + ".s")
        else:
            s = self.node("HardSigmoid", [s], name + ".s", alpha=1.0 / 6, beta=0.5)
        return self.node("Mul", [x, s], name + ".out")

    def classifier(self, x: str, c: int, hidden: int = 0, act: str = "") -> str:
        """Global average pooling, an optional hidden linear layer with `act`, and 1000 logits."""
        x = self.node("Flatten", [self.node("GlobalAveragePool", [x], "gap")], "flat")
        for name, (cin, cout) in ((("fc1", (c, hidden)),) if hidden else ()) + (("fc", (hidden or c, 1000)),):
            self.const(name + ".w", self.rng.standard_normal((cout, cin)) * np.sqrt(1.0 / cin))
            self.const(name + ".b", np.zeros(cout))
            x = self.node("Gemm", [x, name + ".w", name + ".b"], name if name == "fc1" else "logits", transB=1)
            x = self.act(x, act) if name == "fc1" else x
        return x

    def save(self, path: str, name: str) -> None:
        import onnx
        from onnx import TensorProto, helper

        g = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], self.inits)
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _inverted_residual_net(path: str, name: str, seed: int, act: str, blocks: List[tuple], se: bool) -> None:
    """A MobileNet v2 / EfficientNet-style net: a 3x3 / 2 stem, inverted residual blocks
    `(expansion, kernel, stride, channels, repeats)` (1x1 expansion, depthwise, a
    squeeze-excitation with `se`, 1x1 projection, a shortcut where the shape allows), a
    1280-channel head, global average pooling and a classifier."""
    net = _Net(seed)
    x, c, i = net.conv("input", "stem", 3, 32, 3, 2, act=act), 32, 0
    for t, k, s, cout, n in blocks:
        for j in range(n):
            stride = s if j == 0 else 1
            h = x if t == 1 else net.conv(x, f"b{i}.expand", c, c * t, 1, 1, act=act)
            h = net.conv(h, f"b{i}.dw", c * t, c * t, k, stride, groups=c * t, act=act)
            if se:
                h = net.squeeze_excite(h, f"b{i}.se", c * t, max(1, c // 4), act, "sigmoid")
            h = net.conv(h, f"b{i}.project", c * t, cout, 1, 1)
            if stride == 1 and c == cout:
                h = net.node("Add", [x, h], f"b{i}.add")
            x, c, i = h, cout, i + 1
    net.classifier(net.conv(x, "head", c, 1280, 1, 1, act=act), 1280)
    net.save(path, name)


def mobilenet_v2(path: str) -> None:
    """MobileNet v2 as torchvision lays it out (width 1.0), ReLU6 exported as Clip(0, 6)."""
    blocks = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 3, 2, 32, 3), (6, 3, 2, 64, 4), (6, 3, 1, 96, 3),
              (6, 3, 2, 160, 3), (6, 3, 1, 320, 1)]
    _inverted_residual_net(path, "mobilenet_v2", 3, "relu6", blocks, se=False)


def efficientnet_b0(path: str) -> None:
    """EfficientNet-B0's layout: 3x3 and 5x5 depthwise convolutions, a squeeze-excitation per
    block, SiLU. Run only when named (--models efficientnet-b0)."""
    blocks = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    _inverted_residual_net(path, "efficientnet_b0", 4, "silu", blocks, se=True)


def mobilenet_v3(path: str) -> None:
    """MobileNet v3 large as torchvision lays it out: blocks `(kernel, expanded, channels,
    squeeze-excitation, activation, stride)`, HardSwish and HardSigmoid as PyTorch exports
    them (opset 17), a 1280-wide hidden classifier layer. Run only when named."""
    blocks = [(3, 16, 16, 0, "relu", 1), (3, 64, 24, 0, "relu", 2), (3, 72, 24, 0, "relu", 1),
              (5, 72, 40, 1, "relu", 2), (5, 120, 40, 1, "relu", 1), (5, 120, 40, 1, "relu", 1),
              (3, 240, 80, 0, "hswish", 2), (3, 200, 80, 0, "hswish", 1), (3, 184, 80, 0, "hswish", 1),
              (3, 184, 80, 0, "hswish", 1), (3, 480, 112, 1, "hswish", 1), (3, 672, 112, 1, "hswish", 1),
              (5, 672, 160, 1, "hswish", 2), (5, 960, 160, 1, "hswish", 1), (5, 960, 160, 1, "hswish", 1)]
    net = _Net(5)
    x, c = net.conv("input", "stem", 3, 16, 3, 2, act="hswish"), 16
    for i, (k, e, cout, se, act, stride) in enumerate(blocks):
        h = x if e == c else net.conv(x, f"b{i}.expand", c, e, 1, 1, act=act)
        h = net.conv(h, f"b{i}.dw", e, e, k, stride, groups=e, act=act)
        if se:
            # torchvision's squeezed width: a quarter, rounded to a multiple of 8.
            h = net.squeeze_excite(h, f"b{i}.se", e, max(8, (e // 4 + 4) // 8 * 8), "relu", "hsigmoid")
        h = net.conv(h, f"b{i}.project", e, cout, 1, 1)
        if stride == 1 and c == cout:
            h = net.node("Add", [x, h], f"b{i}.add")
        x, c = h, cout
    net.classifier(net.conv(x, "last", c, 960, 1, 1, act="hswish"), 960, hidden=1280, act="hswish")
    net.save(path, "mobilenet_v3_large")


#: Models built and run only when named with --models.
ON_REQUEST = {
    "efficientnet-b0": ("efficientnet_b0_random.onnx", efficientnet_b0),
    "mobilenet-v3": ("mobilenet_v3_large_random.onnx", mobilenet_v3),
}


def _batch_symbolic(m: Any) -> None:
    """A symbolic batch, and the classifier's Reshape to [-1, features] instead of [1, ...]."""
    from onnx import numpy_helper

    inits = {i.name: n for n, i in enumerate(m.graph.initializer)}
    for node in m.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            init = m.graph.initializer[inits[node.input[1]]]
            shape = numpy_helper.to_array(init).copy()
            if shape.size and shape[0] == 1:
                shape[0] = -1
                init.CopyFrom(numpy_helper.from_array(shape, init.name))
    for v in list(m.graph.input) + list(m.graph.output):
        d = v.type.tensor_type.shape.dim
        if len(d):
            d[0].ClearField("dim_value")
            d[0].dim_param = "batch"


def models(extra: bool = False, named: Sequence[str] = ()) -> Dict[str, str]:
    os.makedirs(ROOT, exist_ok=True)
    out = {"resnet50": os.path.join(ROOT, "resnet50_random_v2.onnx"), "mobilenet-like": os.path.join(ROOT, "mobilenet_like.onnx"),
           "mobilenet-v2": os.path.join(ROOT, "mobilenet_v2_random.onnx")}
    for name, build in (("resnet50", resnet50), ("mobilenet-like", mobilenet), ("mobilenet-v2", mobilenet_v2)):
        if not os.path.isfile(out[name]):
            build(out[name])
    for name in named:
        if name in ON_REQUEST:
            file, build = ON_REQUEST[name]
            out[name] = os.path.join(ROOT, file)
            if not os.path.isfile(out[name]):
                build(out[name])
    for name in LIGHT if extra else []:
        out[name] = os.path.join(ROOT, f"light_{name}_random.onnx")
        if not os.path.isfile(out[name]):
            light(name, out[name])
    return out


def phase(system: str, path: str, batch: int, threads: int) -> Dict[str, Any]:
    import onnx

    fixed = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0].dim_value
    x = np.random.default_rng(2).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    if system == "rlx":
        import rlx
        import rlx.onnx

        m = rlx.onnx.load(path) if fixed else rlx.onnx.load(path, dims={"batch": (1, 64)})
        exe = m.pipeline().get_or_compile() if fixed else m.pipeline().get_or_compile(batch=batch)
        name = m.inputs[0]
        run = lambda: exe.run({name: x})  # noqa: E731
        what = f"{exe.kernels[0]}" + (f", {exe.samples_apart} samples apart" if exe.samples_apart else "")
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        run = lambda: sess.run(None, {name: x})  # noqa: E731
        what = f"onnxruntime {ort.__version__}"
    for _ in range(3):
        run()
    # At least 10 runs (5 at batch 8), and as many as fill a second: a 1.5 ms model's 10 runs
    # took 15 ms, too short a phase to see past the VM's swings.
    t = time.perf_counter()
    run()
    runs = max(10 if batch == 1 else 5, min(1000, int(1.0 / max(time.perf_counter() - t, 1e-6))))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"ms": statistics.median(times) * 1e3, "what": what}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=2, help="phase pairs per row; the best round of each system counts")
    ap.add_argument("--light", action="store_true", help="the other light models too (batch 1)")
    ap.add_argument("--models", default="", help="comma-separated model names to run (default: all but efficientnet-b0)")
    ap.add_argument("--phase", nargs=4, metavar=("SYSTEM", "MODEL", "BATCH", "THREADS"))
    a = ap.parse_args()
    named = a.models.split(",") if a.models else []
    paths = models(a.light or (a.phase is not None and a.phase[1] in LIGHT), named + ([a.phase[1]] if a.phase else []))
    if a.phase:
        system, model, batch, threads = a.phase
        print(json.dumps(phase(system, paths[model], int(batch), int(threads))))
        return
    if a.models:
        paths = {name: paths[name] for name in a.models.split(",") if name in paths}
    header("Vision models vs ONNX Runtime (224 x 224, random weights)", ["onnxruntime", "onnx"])
    rows: List[List[str]] = []
    for threads in [int(t) for t in a.threads.split(",")]:
        for model in paths:
            for batch in [int(b) for b in a.batches.split(",")] if model not in LIGHT else [1]:
                got: Dict[str, Any] = {"rlx": None, "ort": None}
                how = ""
                # Rounds alternate the systems, so a drift in the machine's speed reaches both.
                for _ in range(max(1, a.rounds)):
                    for system in ("rlx", "ort"):
                        env = dict(os.environ, RLX_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
                        res = subprocess.run([sys.executable, __file__, "--phase", system, model, str(batch), str(threads)],
                                             env=env, capture_output=True, text=True, check=False)
                        if res.returncode != 0:
                            print(res.stderr[-1500:], file=sys.stderr)
                            continue
                        out = json.loads(res.stdout.strip().splitlines()[-1])
                        ms = out["ms"]
                        how = out["what"] if system == "rlx" else how
                        got[system] = ms if got[system] is None else min(got[system], ms)
                ms = lambda v: "failed" if v is None else f"{v:.1f}"  # noqa: E731
                rows.append([model, str(batch), str(threads), ms(got["rlx"]), ms(got["ort"]), fmt_ratio(got["rlx"], got["ort"])])
                print(f"  {model} batch {batch}, {threads} thread(s): rlx {ms(got['rlx'])} ms ({how}), ORT {ms(got['ort'])} ms", flush=True)
    print(rows_table(["model", "batch", "threads", "rlx ms", "ORT ms", "rlx / ORT"], rows))


if __name__ == "__main__":
    main()
