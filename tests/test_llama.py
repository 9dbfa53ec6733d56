"""Decoder LMs (rlx.models.llama) on tiny random Llama / Qwen2 / Mistral checkpoints, against
an independent float64 numpy forward (tests/llama_support.py): full-sequence logits, prefill +
decode through the KV cache, greedy and sampled generation, errors, and the ONNX form of the
same decoder through rlx.onnx.load against ONNX Runtime."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

import rlx

if importlib.util.find_spec("rlx.models.llama") is None:
    pytest.skip("rlx.models.llama is not implemented yet", allow_module_level=True)

from rlx.models import llama  # noqa: E402  (after the skip; an import error inside it fails loudly)

from llama_support import (  # noqa: E402
    empty_past,
    numpy_greedy,
    numpy_llama_logits,
    ort_decoder,
    presents_as_past,
    random_llama_dir,
    read_safetensors,
    write_onnx_decoder,
    write_safetensors,
)

TOL = 1e-4  # max abs error, relative to the largest reference logit when that is above 1

# Seeds chosen so that greedy decoding from PROMPT is varied and never near a tie.
CONFIGS = {
    "mha": dict(heads=4, kv_heads=4, seed=2),
    "gqa": dict(heads=4, kv_heads=2, seed=2),
    "mqa_tied": dict(heads=4, kv_heads=1, tied=True, vocab=200, seed=1),
    "qwen2_tied": dict(model_type="qwen2", heads=4, kv_heads=2, tied=True, seed=2),
    "llama_attention_bias": dict(qkv_bias=True, hidden=48, heads=6, kv_heads=3, seed=5),
    "mistral_theta": dict(model_type="mistral", rope_theta=1e6, eps=1e-5, hidden=64, heads=8, kv_heads=2,
                          ffn=96, vocab=300, seed=1),
    "head_dim": dict(hidden=32, heads=4, kv_heads=2, head_dim=16, seed=7),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """``model(name) -> (model_dir, CausalLM)``, each built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            d = random_llama_dir(tmp_path_factory.mktemp(name), **CONFIGS[name])
            cache[name] = (d, llama.CausalLM(d))
        return cache[name]

    return get


def assert_close(got, want, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= TOL * max(1.0, float(np.abs(want).max())), f"{what}: max abs diff {err:.3g}"


def random_ids(vocab, shape, seed):
    return np.random.default_rng(seed).integers(0, vocab, size=shape, dtype=np.int64)


def vocab_of(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)["vocab_size"]


# -- full-sequence logits ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_numpy(model, name):
    d, lm = model(name)
    ids = random_ids(vocab_of(d), (2, 11), seed=len(name))
    got = lm.logits(ids)
    assert got.shape == (2, 11, vocab_of(d))
    assert_close(got, numpy_llama_logits(d, ids), name)


@pytest.mark.parametrize("b,s", [(1, 1), (1, 17), (3, 5), (2, 40)])
def test_logits_shapes(model, b, s):
    d, lm = model("gqa")
    ids = random_ids(vocab_of(d), (b, s), seed=b * 100 + s)
    assert_close(lm.logits(ids), numpy_llama_logits(d, ids), f"[{b}, {s}]")


def test_logits_right_padding(model):
    d, lm = model("qwen2_tied")
    ids = random_ids(vocab_of(d), (3, 9), seed=5)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 1:] = 0
    got = lm.logits(ids, attention_mask=mask)
    assert_close(got[0], numpy_llama_logits(d, ids[:1])[0], "full row")
    for row, n in ((1, 5), (2, 1)):  # valid positions: those of the row alone, unpadded
        assert_close(got[row, :n], numpy_llama_logits(d, ids[row : row + 1, :n])[0], f"row {row}")


# -- prefill + decode through the KV cache -----------------------------------------------------


@pytest.mark.parametrize("name", ["gqa", "qwen2_tied", "head_dim"])
@pytest.mark.parametrize("b,n,m", [(1, 1, 6), (1, 5, 3), (2, 12, 1), (2, 16, 10)])
def test_prefill_then_decode_matches_full_forward(model, name, b, n, m):
    d, lm = model(name)
    ids = random_ids(vocab_of(d), (b, n + m), seed=n * 10 + m)
    full = lm.logits(ids)
    sess = lm.session(batch=b, max_context=32)
    assert_close(sess.prefill(ids[:, :n]), full[:, n - 1], "prefill")
    assert list(sess.past) == [n] * b
    for j in range(m):
        assert_close(sess.decode(ids[:, n + j]), full[:, n + j], f"decode step {j}")
        assert list(sess.past) == [n + j + 1] * b


def test_prefill_right_padded_batch_then_decode(model):
    """Rows of different prompt lengths in one session: each row's logits are those of the row
    alone, and each row's past grows from its own length."""
    d, lm = model("gqa")
    vocab = vocab_of(d)
    lengths = [5, 9, 1]
    steps = 4
    seqs = [list(random_ids(vocab, n + steps, seed=n)) for n in lengths]
    padded = np.zeros((len(lengths), max(lengths)), np.int64)  # pad id 0, on the right
    for r, n in enumerate(lengths):
        padded[r, :n] = seqs[r][:n]
    alone = [lm.logits(np.array([s], np.int64))[0] for s in seqs]
    sess = lm.session(batch=len(lengths), max_context=16)
    got = sess.prefill(padded, lengths=lengths)
    for r, n in enumerate(lengths):
        assert_close(got[r], alone[r][n - 1], f"prefill row {r}")
    assert list(sess.past) == lengths
    for j in range(steps):
        nxt = np.array([s[n + j] for s, n in zip(seqs, lengths)], np.int64)
        got = sess.decode(nxt)
        for r, n in enumerate(lengths):
            assert_close(got[r], alone[r][n + j], f"decode step {j} row {r}")
        assert list(sess.past) == [n + j + 1 for n in lengths]


def test_sessions_are_independent(model):
    d, lm = model("mha")
    ids = random_ids(vocab_of(d), (2, 10), seed=3)
    full = lm.logits(ids)
    a, b = lm.session(batch=1, max_context=16), lm.session(batch=1, max_context=16)
    a.prefill(ids[:1, :6])
    b.prefill(ids[1:, :4])
    for j in range(3):  # interleaved
        assert_close(a.decode(ids[0, 6 + j : 7 + j]), full[:1, 6 + j], f"session a step {j}")
        assert_close(b.decode(ids[1, 4 + j : 5 + j]), full[1:, 4 + j], f"session b step {j}")


def test_kv_cache_holds_kv_heads_only(model):
    """The cache stores the kv heads (not heads repeated for GQA) for max_context positions."""
    d, lm = model("gqa")  # 2 layers, 2 kv heads of 8 (4 query heads)
    sess = lm.session(batch=2, max_context=64)
    sess.prefill(random_ids(vocab_of(d), (2, 10), seed=0))
    per_position = 2 * 2 * 2 * 2 * 8 * 4  # k and v x layers x batch x kv heads x head_dim x f32
    assert 10 * per_position <= sess.kv_cache_bytes <= 64 * per_position


# -- generation --------------------------------------------------------------------------------

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


def greedy_reference(d, prompt, n):
    want, margin = numpy_greedy(d, prompt, n, with_margin=True)
    # A float32 implementation may take either token of a near tie; the data must avoid one.
    assert margin > 1e-3, f"test data: a greedy choice is within {margin:.1e} of a tie; change the prompt"
    return want


@pytest.mark.parametrize("name", ["mha", "mqa_tied", "qwen2_tied", "mistral_theta"])
def test_greedy_matches_numpy(model, name):
    d, lm = model(name)
    want = greedy_reference(d, PROMPT, 16)
    assert len(set(want)) > 3, "test data: greedy decoding is degenerate"
    assert lm.generate(PROMPT, max_new_tokens=16) == want


def test_greedy_batch_and_callback(model):
    d, lm = model("gqa")
    prompts = [PROMPT[:3], PROMPT, [7]]
    want = [greedy_reference(d, p, 10) for p in prompts]
    seen = {r: [] for r in range(len(prompts))}
    got = lm.generate(prompts, max_new_tokens=10, callback=lambda row, tok: seen[row].append(tok))
    assert got == want
    assert [seen[r] for r in range(len(prompts))] == want
    # A single prompt returns a flat list and calls back with row 0.
    calls = []
    assert lm.generate(PROMPT[:3], 5, callback=lambda row, tok: calls.append((row, tok))) == want[0][:5]
    assert calls == [(0, t) for t in want[0][:5]]


def test_eos_stops_each_row(model):
    d, lm = model("mha")
    prompts = [PROMPT, PROMPT[:4]]
    full = lm.generate(prompts, 12)
    eos = full[0][3]
    for got, row in zip(lm.generate(prompts, 12, eos_token_id=eos), full):
        # Up to and including the first eos (Hugging Face keeps it), else all 12.
        assert got == (row[: row.index(eos) + 1] if eos in row else row)


def test_long_generation_compiles_few_variants(tmp_path):
    d = random_llama_dir(tmp_path, seed=11)
    lm = llama.CausalLM(d)
    before = lm.stats["variants_compiled"]
    out = lm.generate(PROMPT[:7], max_new_tokens=200)
    assert len(out) == 200 and all(0 <= t < 128 for t in out)
    compiled = lm.stats["variants_compiled"] - before
    assert compiled <= 4, f"{compiled} variants compiled for one 200-token generation"
    # The same request again reuses them.
    again = lm.stats["variants_compiled"]
    assert lm.generate(PROMPT[:7], max_new_tokens=200) == out
    assert lm.stats["variants_compiled"] == again


def test_sampling_is_reproducible_with_a_seed(model):
    d, lm = model("gqa")
    kw = dict(max_new_tokens=24, do_sample=True, temperature=0.9, top_k=40, top_p=0.95)
    a = lm.generate(PROMPT, seed=7, **kw)
    assert a == lm.generate(PROMPT, seed=7, **kw)
    assert len(a) == 24 and all(0 <= t < vocab_of(d) for t in a)
    others = [lm.generate(PROMPT, seed=s, **kw) for s in (8, 9, 10)]
    assert any(o != a for o in others), "different seeds all gave the same 24 tokens"
    # Batch rows sample independently but reproducibly.
    rows = lm.generate([PROMPT, PROMPT], seed=7, **kw)
    assert rows == lm.generate([PROMPT, PROMPT], seed=7, **kw)


def test_top_k_1_is_greedy(model):
    _, lm = model("mqa_tied")
    greedy = lm.generate(PROMPT, 16)
    assert lm.generate(PROMPT, 16, do_sample=True, top_k=1, temperature=0.7, seed=3) == greedy
    assert lm.generate(PROMPT, 16, do_sample=True, top_k=1, temperature=1.5, seed=4) == greedy


def _ranks(d, prompt, tokens):
    """Per generated token: its rank (0 = most likely) and the next-token logits."""
    out, seq = [], list(prompt)
    for t in tokens:
        logits = numpy_llama_logits(d, [seq])[0, -1].astype(np.float64)
        out.append((int((logits > logits[t]).sum()), logits))
        seq.append(t)
    return out


def test_sampled_tokens_respect_top_k(model):
    d, lm = model("mha")
    for seed in range(3):
        toks = lm.generate(PROMPT, 12, do_sample=True, top_k=5, temperature=2.0, seed=seed)
        assert all(rank < 5 for rank, _ in _ranks(d, PROMPT, toks)), toks


def test_sampled_tokens_respect_top_p(model):
    d, lm = model("mha")
    p, temperature = 0.5, 0.8
    for seed in range(3):
        toks = lm.generate(PROMPT, 12, do_sample=True, top_p=p, temperature=temperature, seed=seed)
        for rank, logits in _ranks(d, PROMPT, toks):
            probs = np.exp((logits - logits.max()) / temperature)
            cum = np.cumsum(np.sort(probs / probs.sum())[::-1])
            # The nucleus: the fewest most likely tokens whose mass reaches p (with float slack).
            nucleus = int(np.searchsorted(cum, p - 1e-4)) + 1
            assert rank < nucleus, (rank, nucleus, toks)


# -- errors ------------------------------------------------------------------------------------


def test_decode_beyond_max_context_raises(model):
    d, lm = model("gqa")
    ids = random_ids(vocab_of(d), (1, 9), seed=1)
    sess = lm.session(batch=1, max_context=8)
    sess.prefill(ids[:, :6])
    sess.decode(ids[:, 6])
    sess.decode(ids[:, 7])
    assert list(sess.past) == [8]
    with pytest.raises(rlx.RlxError):
        sess.decode(ids[:, 8])
    with pytest.raises(rlx.RlxError):
        lm.session(batch=1, max_context=8).prefill(ids)


def _config(**changes):
    c = {"model_type": "llama", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
    c.update(changes)
    return {k: v for k, v in c.items() if v is not None}


def test_config_defaults():
    cfg = llama.LlamaConfig.from_dict(_config(num_key_value_heads=None, rope_theta=None))
    assert cfg.num_key_value_heads == 4 and cfg.head_dim == 8
    assert cfg.rope_theta == 10000.0 and cfg.tie_word_embeddings is False and cfg.attention_bias is False


BAD_CONFIGS = {
    "missing vocab_size": _config(vocab_size=None),
    "string hidden_size": _config(hidden_size="32"),
    "negative layers": _config(num_hidden_layers=-1),
    "hidden not a multiple of heads": _config(hidden_size=30),
    "heads not a multiple of kv heads": _config(num_key_value_heads=3),
    "odd head_dim": _config(hidden_size=36),
    "zero rope_theta": _config(rope_theta=0.0),
    "string eps": _config(rms_norm_eps="tiny"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_raises_model_format_error(case):
    with pytest.raises(rlx.ModelFormatError):
        llama.LlamaConfig.from_dict(BAD_CONFIGS[case])


def test_bad_config_files(tmp_path):
    with pytest.raises(rlx.ModelFormatError):
        llama.LlamaConfig.from_dict([1, 2, 3])
    with pytest.raises(rlx.ModelFormatError):
        llama.LlamaConfig.from_file(str(tmp_path / "missing.json"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(rlx.ModelFormatError):
        llama.LlamaConfig.from_file(str(tmp_path / "config.json"))
    with pytest.raises(rlx.RlxError):  # another architecture
        llama.LlamaConfig.from_dict(_config(model_type="gpt2"))


@pytest.mark.parametrize("change", ["drop lm_head", "drop a layer norm", "transpose k_proj"])
def test_bad_weights_raise_model_format_error(tmp_path, change):
    d = random_llama_dir(tmp_path, heads=4, kv_heads=2)
    path = os.path.join(d, "model.safetensors")
    w = dict(read_safetensors(path))
    if change == "drop lm_head":  # untied: the head is required
        del w["lm_head.weight"]
    elif change == "drop a layer norm":
        del w["model.layers.1.post_attention_layernorm.weight"]
    else:
        w["model.layers.0.self_attn.k_proj.weight"] = np.ascontiguousarray(w["model.layers.0.self_attn.k_proj.weight"].T)
    write_safetensors(path, w)
    with pytest.raises(rlx.ModelFormatError):
        llama.CausalLM(d)


def test_out_of_vocab_ids_raise(model):
    d, lm = model("gqa")
    vocab = vocab_of(d)
    for bad in (vocab, -1):
        ids = np.array([[1, 2, bad]], np.int64)
        with pytest.raises(rlx.RlxError):
            lm.logits(ids)
        with pytest.raises(rlx.RlxError):
            lm.session(batch=1, max_context=8).prefill(ids)
        sess = lm.session(batch=1, max_context=8)
        sess.prefill(ids[:, :2])
        with pytest.raises(rlx.RlxError):
            sess.decode(np.array([bad], np.int64))
        with pytest.raises(rlx.RlxError):
            lm.generate([1, bad], 3)
    # The model still works afterwards.
    ok = random_ids(vocab, (1, 4), seed=0)
    assert_close(lm.logits(ok), numpy_llama_logits(d, ok), "after errors")


# -- the ONNX decoder --------------------------------------------------------------------------


def test_onnx_decoder_imports_and_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import rlx.onnx

    d = random_llama_dir(tmp_path / "model", heads=4, kv_heads=2, qkv_bias=True, seed=21)
    path = write_onnx_decoder(d, str(tmp_path / "decoder.onnx"))
    try:
        # "past" is 0 on the first call: its default bounds allow that.
        model = rlx.onnx.load(path, dims={"batch": (1, 4), "seq": (1, 64)})
        assert model.symbols["past"][0] == 0
    except rlx.UnsupportedOpError as e:
        pytest.skip(f"rlx.onnx.load cannot import the decoder yet: {e}")
    ort_run = ort_decoder(path)
    b, n, steps = 2, 7, 3
    ids = random_ids(vocab_of(d), (b, n + steps), seed=0)
    pos = np.ascontiguousarray(np.broadcast_to(np.arange(n + steps, dtype=np.int64), ids.shape))
    want_logits = numpy_llama_logits(d, ids)
    feeds_rlx = feeds_ort = {"input_ids": ids[:, :n].copy(), "position_ids": pos[:, :n].copy(), **empty_past(d, b)}
    for step in range(steps + 1):
        lo = 0 if step == 0 else n + step - 1  # the first position this call computes
        if step:  # one more token, each runtime on its own presents
            nxt = {"input_ids": ids[:, lo : lo + 1].copy(), "position_ids": pos[:, lo : lo + 1].copy()}
            feeds_rlx, feeds_ort = {**nxt, **presents_as_past(got)}, {**nxt, **presents_as_past(want)}
        got, want = model.run(feeds_rlx), ort_run(feeds_ort)
        assert sorted(got) == sorted(want)
        for k in want:
            assert_close(got[k], want[k], f"step {step} {k}")
        assert_close(got["logits"], want_logits[:, lo : n + step], f"step {step} logits vs numpy")


# -- the command line --------------------------------------------------------------------------


def test_cli_generate_prints_the_greedy_tokens(model, capsys):
    from rlx.__main__ import main

    d, lm = model("gqa")
    want = lm.generate(PROMPT, 6)
    assert main(["generate", "--model-dir", d, " ".join(map(str, PROMPT)), "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    assert [int(t) for t in out.split()] == want
    assert "tokens/s" in err and "variants compiled" in err


def test_cli_generate_errors_exit_2(tmp_path, capsys):
    from rlx.__main__ import main

    assert main(["generate", "--model-dir", str(tmp_path / "missing"), "1 2"]) == 2
    d = random_llama_dir(tmp_path / "m")
    assert main(["generate", "--model-dir", d, "not ids"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ModelFormatError") == 2
