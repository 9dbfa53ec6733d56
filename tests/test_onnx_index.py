"""rlx.onnx GatherElements, GatherND, ScatterElements / Scatter, ScatterND and ReverseSequence
against ONNX Runtime (bit for bit: they only move values), and their errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, I32, I64, check, run, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(1)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("ielem", [I64, I32])
def test_gather_elements(axis, ielem):
    data = _x(3, 4, 5)
    ishape = [2, 3, 4]
    ishape[axis] = 6  # longer than the data along the axis: indices repeat
    n = data.shape[axis]
    idx = RNG.integers(-n, n, ishape).astype(np.int64 if ielem == I64 else np.int32)
    m = single("GatherElements", [("d", F, [3, 4, 5]), ("i", ielem, ishape)], F, axis=axis)
    check(m, {"d": data, "i": idx}, exact=True)


def test_gather_elements_out_of_range_raises():
    m = single("GatherElements", [("d", F, [3, 4]), ("i", I64, [2, 4])], F, axis=1)
    with pytest.raises(IndexError):
        run(m, {"d": _x(3, 4), "i": np.full((2, 4), 4, np.int64)})
    with pytest.raises(rlx.ShapeError, match="the_node.*larger than the data"):
        rlx.onnx.load(single("GatherElements", [("d", F, [3, 4]), ("i", I64, [4, 4])], F, axis=1))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*static shapes"):
        rlx.onnx.load(single("GatherElements", [("d", F, ["n", 4]), ("i", I64, [2, 4])], F, axis=1))


@pytest.mark.parametrize("dshape,ishape,b", [([4, 5, 6], [3, 2], 0), ([4, 5, 6], [2, 3, 1], 0), ([4, 5, 6], [7, 3], 0),
                                             ([4, 5, 6], [4, 2], 1), ([4, 5, 6], [4, 3, 1], 1), ([2, 3, 4, 5], [2, 3, 2, 1], 2)])
def test_gather_nd(dshape, ishape, b):
    k = ishape[-1]
    bounds = np.array(dshape[b: b + k])
    idx = (RNG.integers(0, 1 << 30, ishape) % bounds - RNG.integers(0, 2, ishape) * bounds).astype(np.int64)
    m = single("GatherND", [("d", F, dshape), ("i", I64, ishape)], F, batch_dims=b)
    check(m, {"d": _x(*dshape), "i": idx}, exact=True)


def test_gather_nd_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*index tuples of 4"):
        rlx.onnx.load(single("GatherND", [("d", F, [2, 3]), ("i", I64, [1, 4])], F))
    with pytest.raises(IndexError):
        run(single("GatherND", [("d", F, [2, 3]), ("i", I64, [1, 2])], F), {"d": _x(2, 3), "i": np.array([[2, 0]])})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("elem", [F, I64])
def test_scatter_elements(reduction, axis, elem):
    dshape = [4, 5, 3]
    ishape = [3, 4, 2]  # smaller than the data off the axis
    ishape[axis] = 6
    n = dshape[axis]
    data = _x(*dshape) if elem == F else RNG.integers(-9, 9, dshape)
    upd = _x(*ishape) if elem == F else RNG.integers(-9, 9, ishape)
    if reduction == "none":
        # Duplicates are unordered in ONNX Runtime: distinct positions along the axis (a
        # random permutation per row, cut to the update shape).
        ishape[axis] = n
        perm = np.argsort(RNG.random([n if a == axis % 3 else dshape[a] for a in range(3)]), axis=axis)
        idx = perm[tuple(slice(0, s) for s in ishape)]
        upd = upd[tuple(slice(0, s) for s in ishape)]
    else:
        idx = RNG.integers(-n, n, ishape)
    m = single("ScatterElements", [("d", elem, dshape), ("i", I64, ishape), ("u", elem, ishape)], elem, opset=18,
               axis=axis, reduction=reduction)
    check(m, {"d": data.astype(np.float32 if elem == F else np.int64), "i": idx.astype(np.int64),
              "u": upd.astype(np.float32 if elem == F else np.int64)}, exact=elem != F or reduction in ("none", "max", "min"),
          rtol=1e-6)


def test_scatter_none_duplicates_take_the_last_update():
    # The onnx reference (and so the backend tests) writes the updates in order.
    m = single("ScatterElements", [("d", F, [1, 5]), ("i", I64, [1, 3]), ("u", F, [1, 3])], F, axis=1)
    feeds = {"d": np.zeros((1, 5), np.float32), "i": np.array([[1, 1, 3]]), "u": np.array([[7, 8, 9]], np.float32)}
    check(m, feeds, which="ref", exact=True)


def test_scatter_old_op_and_out_of_range():
    m = single("Scatter", [("d", F, [3, 3]), ("i", I64, [2, 3]), ("u", F, [2, 3])], F, opset=9, axis=0)
    feeds = {"d": _x(3, 3), "i": np.array([[1, 0, 2], [0, 2, 1]]), "u": _x(2, 3)}
    check(m, feeds, exact=True)
    with pytest.raises(IndexError):
        run(m, dict(feeds, i=np.array([[1, 0, 3], [0, 2, 1]])))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dshape,ishape", [([8], [4, 1]), ([4, 4, 4], [2, 1]), ([4, 4, 4], [3, 2]), ([4, 5, 3], [2, 2, 3])])
def test_scatter_nd(reduction, dshape, ishape):
    k = ishape[-1]
    slots = np.array(list(np.ndindex(*dshape[:k])))
    u = int(np.prod(ishape[:-1]))
    # Reduction "none": distinct slots (ONNX Runtime leaves the order of duplicates open).
    pick = RNG.permutation(len(slots))[:u] if reduction == "none" else RNG.integers(0, len(slots), u)
    idx = slots[pick].reshape(ishape) - RNG.integers(0, 2, ishape) * np.array(dshape[:k])
    ushape = ishape[:-1] + dshape[k:]
    m = single("ScatterND", [("d", F, dshape), ("i", I64, ishape), ("u", F, ushape)], F, opset=18, reduction=reduction)
    check(m, {"d": _x(*dshape), "i": idx.astype(np.int64), "u": _x(*ushape)}, exact=reduction != "add" and reduction != "mul", rtol=1e-6)


def test_scatter_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*ScatterND updates of shape"):
        rlx.onnx.load(single("ScatterND", [("d", F, [4, 4]), ("i", I64, [2, 1]), ("u", F, [2, 3])], F))
    with pytest.raises(rlx.DTypeError, match="the_node.*int64 and updates of float32"):
        rlx.onnx.load(single("ScatterElements", [("d", I64, [4]), ("i", I64, [2]), ("u", F, [2])], I64))
    with pytest.raises(rlx.ModelFormatError, match="the_node.*reduction 'avg'"):
        rlx.onnx.load(single("ScatterElements", [("d", F, [4]), ("i", I64, [2]), ("u", F, [2])], F, opset=18, reduction="avg"))
    m = single("ScatterND", [("d", F, [4, 4]), ("i", I64, [2, 1]), ("u", F, [2, 4])], F)
    with pytest.raises(IndexError):
        run(m, {"d": _x(4, 4), "i": np.array([[0], [4]]), "u": _x(2, 4)})


@pytest.mark.parametrize("time_axis,batch_axis,shape", [(0, 1, [5, 3, 2]), (1, 0, [3, 5]), (1, 0, [4, 6, 2])])
def test_reverse_sequence(time_axis, batch_axis, shape):
    lens = RNG.integers(1, shape[time_axis] + 1, shape[batch_axis]).astype(np.int64)
    m = single("ReverseSequence", [("x", F, shape), ("n", I64, [shape[batch_axis]])], F,
               time_axis=time_axis, batch_axis=batch_axis)
    check(m, {"x": _x(*shape), "n": lens}, exact=True)


def test_reverse_sequence_errors():
    m = single("ReverseSequence", [("x", F, [4, 2]), ("n", I64, [2])], F, time_axis=0, batch_axis=1)
    with pytest.raises(IndexError):
        run(m, {"x": _x(4, 2), "n": np.array([5, 1])})
    with pytest.raises(rlx.ShapeError, match="the_node.*sequence_lens of shape"):
        rlx.onnx.load(single("ReverseSequence", [("x", F, [4, 2]), ("n", I64, [3])], F, time_axis=0, batch_axis=1))


def _top_k(shape, k, **attrs):
    """A TopK node with k an initializer (values float32, indices int64)."""
    m = single("TopK", [("x", F, shape), "k"], F, inits={"k": np.array([k], np.int64)}, n_out=2, **attrs)
    m.graph.output[1].type.tensor_type.elem_type = I64
    return m


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_top_k_matches_ort_with_ties(axis, largest, k):
    # Values from a few levels: many ties, broken by index.
    x = RNG.integers(-2, 3, (5, 6, 7)).astype(np.float32)
    check(_top_k([5, 6, 7], k, axis=axis, largest=largest), {"x": x}, exact=True)


def test_top_k_errors_name_the_node():
    def model(k):
        return _top_k([3, 4], k)
    with pytest.raises(rlx.ShapeError, match="the_node.*larger than axis"):
        rlx.onnx.load(model(5))
    with pytest.raises(rlx.ShapeError, match="the_node.*negative"):
        rlx.onnx.load(model(-1))
    # k fed at run time: no data-dependent shapes.
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*known at import"):
        rlx.onnx.load(single("TopK", [("x", F, [3, 4]), ("k", I64, [1])], F, n_out=2))
