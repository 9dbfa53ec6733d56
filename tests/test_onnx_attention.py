"""rlx.onnx Attention (opsets 23-25) against ONNX Runtime, or the onnx reference evaluator (which
generates the backend tests' expected outputs) for what ONNX Runtime lacks or reads otherwise;
typed errors naming the node for the variants rlx does not import."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402
from onnx_case_support import check_loaded  # noqa: E402

F, B, I64 = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT64
RNG = np.random.default_rng(0)
NP = {F: np.float32, B: np.bool_, I64: np.int64}
ORDER = ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]


def _attention(shapes, outputs=("Y",), opset=23, types=None, **at):
    """An Attention model over the named inputs in ``shapes`` (name -> shape)."""
    types = types or {}
    ins = [n if n in shapes else "" for n in ORDER]
    while ins[-1] == "":
        ins.pop()
    node = helper.make_node("Attention", ins, list(outputs), name="attn", **at)
    vis = [helper.make_tensor_value_info(n, types.get(n, F), s) for n, s in shapes.items()]
    outs = [helper.make_tensor_value_info(o, F, None) for o in outputs if o]
    model = helper.make_model(helper.make_graph([node], "attn", vis, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _feeds(model, nonpad=None):
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        t = vi.type.tensor_type.elem_type
        if t == B:
            out[vi.name] = RNG.random(shape) > 0.3
        elif t == I64:
            out[vi.name] = np.asarray(nonpad, np.int64)
        else:
            out[vi.name] = RNG.standard_normal(shape).astype(np.float32)
    return out


def check(model, feeds, oracle="ort", rtol=1e-4, atol=1e-5):
    return check_loaded(model, feeds, oracle, rtol, atol)


def _fused(m):
    return "attention(" in str(m.graph)


Q4, K4, V4 = [2, 3, 4, 8], [2, 3, 6, 8], [2, 3, 6, 8]

CASES = {
    "plain": (dict(Q=Q4, K=K4, V=V4), {}),
    "scaled": (dict(Q=Q4, K=K4, V=V4), {"scale": 0.3}),
    "gqa": (dict(Q=[2, 6, 4, 8], K=[2, 2, 6, 8], V=[2, 2, 6, 8]), {}),
    "value_size": (dict(Q=Q4, K=K4, V=[2, 3, 6, 5]), {}),
    "causal_square": (dict(Q=Q4, K=[2, 3, 4, 8], V=[2, 3, 4, 8]), {"is_causal": 1}),
    "causal_top_left": (dict(Q=Q4, K=K4, V=V4), {"is_causal": 1}),
    "gqa_causal": (dict(Q=[2, 6, 4, 8], K=[2, 2, 6, 8], V=[2, 2, 6, 8]), {"is_causal": 1}),
    "mask_2d": (dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 6]), {}),
    "mask_4d_causal": (dict(Q=Q4, K=K4, V=V4, attn_mask=[2, 3, 4, 6]), {"is_causal": 1}),
    "mask_batch": (dict(Q=Q4, K=K4, V=V4, attn_mask=[2, 1, 4, 6]), {}),
    "softcap": (dict(Q=Q4, K=K4, V=V4), {"softcap": 2.0}),
    "softcap_mask": (dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 6]), {"softcap": 1.5}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_4d(case):
    shapes, at = CASES[case]
    model = _attention(shapes, **at)
    m = check(model, _feeds(model))
    # The fused op is taken exactly when its bottom-right causal frontier is ONNX's.
    plain = "attn_mask" not in shapes and "softcap" not in at and case != "causal_top_left" and case != "gqa_causal"
    assert _fused(m) == plain


def test_bool_mask():
    model = _attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[2, 3, 4, 6]), types={"attn_mask": B})
    check(model, _feeds(model))


def test_mask_shorter_than_keys_is_padded_as_masked():
    # A mask over the first 4 of 6 keys: the last two are masked (reference semantics).
    model = _attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 4]))
    check(model, _feeds(model), oracle="ref")


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_qk_matmul_output(mode):
    model = _attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 6]), outputs=("Y", "", "", "qk"),
                       qk_matmul_output_mode=mode, softcap=2.0, is_causal=1)
    # Mode 0 is the raw product (the spec, ONNX Runtime); the reference evaluator returns it
    # softcapped. No backend test combines mode 0 with softcap.
    check(model, _feeds(model), oracle="ort" if mode == 0 else "ref")


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("gqa", [False, True])
def test_past_and_present(causal, gqa):
    hq = 6 if gqa else 2
    model = _attention(dict(Q=[2, hq, 3, 8], K=[2, 2, 3, 8], V=[2, 2, 3, 5], past_key=[2, 2, 5, 8],
                            past_value=[2, 2, 5, 5]), outputs=("Y", "pk", "pv"), is_causal=causal)
    m = check(model, _feeds(model))
    assert _fused(m)  # new keys as long as the query: rlx's causal frontier is ONNX's


def test_past_with_mask_and_qk():
    model = _attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[2, 1, 4, 18], past_key=[2, 3, 12, 8],
                            past_value=[2, 3, 12, 8]), outputs=("Y", "pk", "pv", "qk"),
                       is_causal=1, qk_matmul_output_mode=2)
    check(model, _feeds(model), oracle="ref")


@pytest.mark.parametrize("hq,hk", [(3, 3), (6, 2), (4, 1)])
def test_3d_inputs(hq, hk):
    model = _attention(dict(Q=[2, 4, hq * 8], K=[2, 6, hk * 8], V=[2, 6, hk * 5]), q_num_heads=hq, kv_num_heads=hk)
    check(model, _feeds(model))


def test_3d_with_past():
    model = _attention(dict(Q=[2, 4, 24], K=[2, 4, 24], V=[2, 4, 24], past_key=[2, 3, 5, 8],
                            past_value=[2, 3, 5, 8]), outputs=("Y", "pk", "pv"),
                       q_num_heads=3, kv_num_heads=3, is_causal=1)
    check(model, _feeds(model))


@pytest.mark.parametrize("nonpad,causal", [([6, 3], 1), ([2, 5], 0), ([1, 6], 1)])
def test_nonpad_kv_seqlen(nonpad, causal):
    # nonpad 1 < 4 queries: the leading rows see no key and are zero rows.
    model = _attention(dict(Q=Q4, K=K4, V=V4, nonpad_kv_seqlen=[2]), opset=24,
                       types={"nonpad_kv_seqlen": I64}, is_causal=causal)
    check(model, _feeds(model, nonpad), oracle="ref")


@pytest.mark.parametrize("left,right,causal", [(2, -1, 1), (1, 2, 0), (0, 0, 0)])
def test_sliding_window(left, right, causal):
    model = _attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 6]), opset=25, types={"attn_mask": B},
                       left_window_size=left, right_window_size=right, is_causal=causal)
    check(model, _feeds(model), oracle="ref")


def test_sliding_window_with_nonpad():
    model = _attention(dict(Q=Q4, K=[2, 3, 8, 8], V=[2, 3, 8, 8], nonpad_kv_seqlen=[2]), opset=25,
                       types={"nonpad_kv_seqlen": I64}, left_window_size=2, is_causal=1)
    check(model, _feeds(model, [8, 5]), oracle="ref")


def test_fully_masked_row_is_zero():
    model = _attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 6]), outputs=("Y", "", "", "qk"),
                       types={"attn_mask": B}, qk_matmul_output_mode=3)
    feeds = _feeds(model)
    feeds["attn_mask"][1] = False
    m = check(model, feeds, oracle="ref")
    out = m.run(feeds)
    assert np.all(out["Y"][:, :, 1] == 0) and np.all(out["qk"][:, :, 1] == 0)
    assert np.all(np.isfinite(out["Y"]))


def test_symbolic_batch_and_sequence():
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], is_causal=1)
    vis = [helper.make_tensor_value_info(n, F, ["b", 2, "s", 8]) for n in "QKV"]
    model = helper.make_model(helper.make_graph([node], "sym", vis, [helper.make_tensor_value_info("Y", F, None)]),
                              opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    feeds = {n: RNG.standard_normal((3, 2, 5, 8)).astype(np.float32) for n in "QKV"}
    assert _fused(check(model, feeds))


def _load_error(model, exc, *words):
    with pytest.raises(exc) as e:
        rlx.onnx.load(model)
    for w in ("attn",) + words:
        assert w in str(e.value), str(e.value)


def test_error_3d_without_heads():
    _load_error(_attention(dict(Q=[2, 4, 24], K=[2, 6, 24], V=[2, 6, 24])), rlx.ModelFormatError, "q_num_heads")


def test_error_hidden_not_divisible():
    _load_error(_attention(dict(Q=[2, 4, 25], K=[2, 6, 24], V=[2, 6, 24]), q_num_heads=3, kv_num_heads=3),
                rlx.ShapeError, "25")


def test_error_heads_do_not_divide():
    _load_error(_attention(dict(Q=[2, 4, 4, 8], K=[2, 3, 6, 8], V=[2, 3, 6, 8])), rlx.ShapeError, "kv heads")


def test_error_mismatched_head_size():
    _load_error(_attention(dict(Q=[2, 3, 4, 8], K=[2, 3, 6, 7], V=[2, 3, 6, 8])), rlx.ShapeError)


def test_error_past_key_alone():
    model = _attention(dict(Q=Q4, K=K4, V=V4, past_key=[2, 3, 2, 8]))
    _load_error(model, rlx.ModelFormatError, "past_value")


def test_error_mask_longer_than_keys():
    _load_error(_attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 7])), rlx.ShapeError, "7")


def test_error_mask_dtype():
    model = _attention(dict(Q=Q4, K=K4, V=V4, attn_mask=[4, 6]), types={"attn_mask": I64})
    _load_error(model, rlx.DTypeError, "attn_mask")


def test_error_softmax_precision_half():
    _load_error(_attention(dict(Q=Q4, K=K4, V=V4), opset=24, softmax_precision=10), rlx.UnsupportedOpError, "softmax_precision")


def test_error_bad_qk_mode():
    model = _attention(dict(Q=Q4, K=K4, V=V4), outputs=("Y", "", "", "qk"), qk_matmul_output_mode=4)
    _load_error(model, rlx.ModelFormatError, "qk_matmul_output_mode")


def test_error_symbolic_sequence_with_a_mask_frontier():
    # Top-left causal on symbolic lengths needs the frontier as a constant: refused, named.
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], name="attn", is_causal=1)
    vis = [helper.make_tensor_value_info("Q", F, [1, 2, "s", 8])] + [
        helper.make_tensor_value_info(n, F, [1, 2, "t", 8]) for n in "KV"]
    model = helper.make_model(helper.make_graph([node], "sym", vis, [helper.make_tensor_value_info("Y", F, None)]),
                              opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    _load_error(model, rlx.UnsupportedOpError, "symbolic")
