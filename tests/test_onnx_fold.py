"""rlx.onnx Col2Im and MaxUnpool against the onnx reference / ONNX Runtime, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, I64, check, oracle, run, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(5)


def _blocks(image, block, strides, pads, dilations):
    d = len(image)
    return int(np.prod([(image[i] + pads[i] + pads[i + d] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
                        for i in range(d)]))


@pytest.mark.parametrize("image,block,strides,pads,dilations", [
    ([5, 5], [1, 5], [1, 1], [0, 0, 0, 0], [1, 1]),
    ([5, 5], [2, 2], [1, 1], [0, 0, 0, 0], [1, 1]),
    ([6, 7], [3, 2], [2, 3], [1, 0, 2, 1], [1, 2]),
    ([3, 4, 5], [2, 1, 2], [1, 2, 1], [0, 1, 0, 0, 0, 1], [1, 1, 2]),
    ([4], [3], [1], [2, 2], [1]),
])
def test_col2im(image, block, strides, pads, dilations):
    c, n = 2, 3
    length = _blocks(image, block, strides, pads, dilations)
    x = RNG.standard_normal((n, c * int(np.prod(block)), length)).astype(np.float32)
    m = single("Col2Im", [("x", F, list(x.shape)), "image", "block"], F,
               {"image": np.array(image, np.int64), "block": np.array(block, np.int64)}, opset=18,
               strides=strides, pads=pads, dilations=dilations)
    check(m, {"x": x}, which="ref", rtol=1e-5, atol=1e-6)


def test_col2im_errors():
    inits = {"image": np.array([5, 5], np.int64), "block": np.array([2, 2], np.int64)}
    with pytest.raises(rlx.ShapeError, match="the_node.*holds 15 blocks"):
        rlx.onnx.load(single("Col2Im", [("x", F, [1, 4, 15]), "image", "block"], F, inits, opset=18))
    with pytest.raises(rlx.ShapeError, match="the_node.*prod"):
        rlx.onnx.load(single("Col2Im", [("x", F, [1, 5, 16]), "image", "block"], F, inits, opset=18))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*known at import"):
        rlx.onnx.load(single("Col2Im", [("x", F, [1, 4, 16]), ("image", I64, [2]), "block"], F,
                             {"block": inits["block"]}, opset=18))


def _pooled(x, kernel, strides, pads):
    """(values, indices) of ONNX Runtime's MaxPool."""
    m = single("MaxPool", [("x", F, list(x.shape))], F, n_out=2, opset=12, kernel_shape=kernel, strides=strides,
               pads=pads)
    m.graph.output[1].type.tensor_type.elem_type = I64
    return oracle(m, {"x": x})


@pytest.mark.parametrize("kernel,strides,pads,extra", [
    ([2, 2], [2, 2], [0, 0, 0, 0], None),
    ([3, 3], [1, 1], [0, 0, 0, 0], None),  # overlapping windows: repeated indices
    ([3, 2], [3, 2], [0, 0, 0, 0], None),
    ([2, 2], [2, 2], [0, 0, 0, 0], [1, 0, 1, 2]),  # an output_shape past the unpooled one
])
def test_max_unpool(kernel, strides, pads, extra):
    # Sizes the pools tile exactly: MaxPool's indices address the input, MaxUnpool's output.
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    vals, idx = _pooled(x, kernel, strides, pads)
    ins = [("v", F, list(vals.shape)), ("i", I64, list(idx.shape))]
    inits = {}
    if extra is not None:
        unpooled = [2, 3] + [(vals.shape[2 + i] - 1) * strides[i] - pads[i] - pads[i + 2] + kernel[i] for i in range(2)]
        ins.append("shape")
        inits["shape"] = np.array([u + e for u, e in zip(unpooled, extra)], np.int64)
    m = single("MaxUnpool", ins, F, inits, opset=22, kernel_shape=kernel, strides=strides, pads=pads)
    check(m, {"v": vals, "i": idx}, which="ref", exact=True)


def test_max_unpool_last_index_wins():
    # Two inputs name position 0: the later one is kept, as the reference writes in order.
    m = single("MaxUnpool", [("v", F, [1, 1, 2, 1]), ("i", I64, [1, 1, 2, 1])], F, opset=22, kernel_shape=[2, 1],
               strides=[1, 1])
    got, = run(m, {"v": np.array([3.0, 7.0], np.float32).reshape(1, 1, 2, 1), "i": np.zeros((1, 1, 2, 1), np.int64)})
    np.testing.assert_array_equal(got.reshape(-1), [7.0, 0.0, 0.0])


def test_max_unpool_errors():
    ins = [("v", F, [1, 1, 2, 2]), ("i", I64, [1, 1, 2, 2])]
    with pytest.raises(rlx.ShapeError, match="the_node.*kernel_shape"):
        rlx.onnx.load(single("MaxUnpool", ins, F, opset=22, kernel_shape=[2]))
    with pytest.raises(rlx.ShapeError, match="the_node.*smaller than"):
        rlx.onnx.load(single("MaxUnpool", ins + ["s"], F, {"s": np.array([1, 1, 3, 3])}, opset=22, kernel_shape=[2, 2],
                             strides=[2, 2]))
    with pytest.raises(rlx.ShapeError, match="the_node.*indices"):
        rlx.onnx.load(single("MaxUnpool", [ins[0], ("i", F, [1, 1, 2, 2])], F, opset=22, kernel_shape=[2, 2]))
    big = [("v", F, [8, 64, 32, 32]), ("i", I64, [8, 64, 32, 32])]
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*index mask"):
        rlx.onnx.load(single("MaxUnpool", big, F, opset=22, kernel_shape=[2, 2], strides=[2, 2]))
