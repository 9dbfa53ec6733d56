"""Front doors on bad model directories and arguments (root cause 11): ``SentenceEncoder`` raises
a typed rlx error naming the file or config field; ``python -m rlx`` prints one line
``error: <Type>: ...`` to stderr and exits with status 2, no traceback. After each, a valid call
gives the same output as before."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import rlx
from rlx.__main__ import main

bert = pytest.importorskip("rlx.models.bert")
tokenizers = pytest.importorskip("tokenizers")

CFG = {"vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
       "intermediate_size": 16, "max_position_embeddings": 16}
TEXTS = ["a b", "c"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-layer BERT with random weights and a word-level tokenizer: (model dir, embeddings)."""
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    d = tmp_path_factory.mktemp("tiny")
    (d / "config.json").write_text(json.dumps(CFG))
    graph = bert.build_graph(bert.BertConfig.from_dict(CFG))
    rng = np.random.default_rng(0)
    header, blobs, off = {}, [], 0
    for e in rlx.ModelCompilePipeline(graph).manifest.params:
        a = (rng.standard_normal(e.shape) * 0.5).astype(np.float32)
        header[e.name] = {"dtype": "F32", "shape": list(e.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 8)
    (d / "model.safetensors").write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    tok = tokenizers.Tokenizer(WordLevel({"[UNK]": 0, "a": 1, "b": 2, "c": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(d / "tokenizer.json"))
    emb = bert.SentenceEncoder(str(d)).encode(TEXTS)
    assert emb.shape == (2, 8) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    return str(d), emb


def config(**kw):
    cfg = {k: v for k, v in {**CFG, **kw}.items() if v is not None}
    return json.dumps(cfg).encode()


# (id, files to replace (None deletes), exception, message fragment)
DIR_MISTAKES = [
    ("no model dir", None, rlx.ModelFormatError, "model dir '.*nope': no such directory"),
    ("no config.json", {"config.json": None}, rlx.ModelFormatError, "has no config.json"),
    ("no model.safetensors", {"model.safetensors": None}, rlx.ModelFormatError, "has no model.safetensors"),
    ("no tokenizer.json", {"tokenizer.json": None}, rlx.ModelFormatError, "has no tokenizer.json"),
    ("config not JSON", {"config.json": b"{vocab"}, rlx.ModelFormatError, "config.json': not valid JSON"),
    ("config not UTF-8", {"config.json": b"\xff\xfe{"}, rlx.ModelFormatError, "config.json': not valid JSON"),
    ("config nested deeply", {"config.json": b"[" * 100_000}, rlx.ModelFormatError, "config.json': JSON nested too deeply"),
    ("config is a list", {"config.json": b"[1]"}, rlx.ModelFormatError, "config.json: BERT config must be a JSON object"),
    ("key missing", {"config.json": config(vocab_size=None)}, rlx.ModelFormatError, r"lacks \['vocab_size'\]"),
    ("num_attention_heads 0", {"config.json": config(num_attention_heads=0)}, rlx.ModelFormatError, r"num_attention_heads = 0: must be an int in \[1, 2\*\*31\)"),
    ("hidden_size a string", {"config.json": config(hidden_size="8")}, rlx.ModelFormatError, "hidden_size = '8'"),
    ("layers a float", {"config.json": config(num_hidden_layers=1.0)}, rlx.ModelFormatError, "num_hidden_layers = 1.0"),
    ("vocab_size a bool", {"config.json": config(vocab_size=True)}, rlx.ModelFormatError, "vocab_size = True"),
    ("vocab_size 2**70", {"config.json": config(vocab_size=2**70)}, rlx.ModelFormatError, "vocab_size = 1180591620717411303424"),
    ("heads do not divide", {"config.json": config(num_attention_heads=3)}, rlx.ModelFormatError, "hidden_size 8 is not a multiple of 3 heads"),
    ("eps a string", {"config.json": config(layer_norm_eps="small")}, rlx.ModelFormatError, "layer_norm_eps = 'small'"),
    ("hidden_act a list", {"config.json": config(hidden_act=["gelu"])}, rlx.ModelFormatError, r"hidden_act = \['gelu'\]"),
    ("hidden_act unknown", {"config.json": config(hidden_act="swish")}, rlx.UnsupportedOpError, "hidden_act 'swish' is not supported"),
    ("config disagrees with weights", {"config.json": config(vocab_size=9)}, rlx.ShapeError, "embeddings.word_embeddings.weight"),
    ("weights not safetensors", {"model.safetensors": b"junk"}, rlx.ModelFormatError, "safetensors: file of 4 bytes"),
    ("tokenizer not JSON", {"tokenizer.json": b"{}"}, rlx.ModelFormatError, "tokenizer '.*tokenizer.json': cannot load"),
]


def broken_dir(tiny, tmp_path, files):
    d = tmp_path / "m"
    if files is None:
        return str(tmp_path / "nope")
    shutil.copytree(tiny, d)
    for name, data in files.items():
        os.remove(d / name) if data is None else (d / name).write_bytes(data)
    return str(d)


@pytest.mark.parametrize("case", DIR_MISTAKES, ids=[c[0] for c in DIR_MISTAKES])
def test_sentence_encoder_on_bad_model_dirs(tiny, tmp_path, case):
    _, files, exc, fragment = case
    with pytest.raises(exc, match=fragment):
        bert.SentenceEncoder(broken_dir(tiny[0], tmp_path, files))
    np.testing.assert_array_equal(bert.SentenceEncoder(tiny[0]).encode(TEXTS), tiny[1])


@pytest.mark.parametrize("model_dir", [None, 3])
def test_sentence_encoder_model_dir_of_wrong_type(tiny, model_dir):
    with pytest.raises(rlx.ModelFormatError, match="model dir must be a path"):
        bert.SentenceEncoder(model_dir)
    np.testing.assert_array_equal(bert.SentenceEncoder(tiny[0]).encode(TEXTS), tiny[1])


def error_line(capsys, argv, exc_name, fragment):
    """Runs the CLI in process; checks status 2 and one ``error:`` line; returns stdout."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {exc_name}: "), err
    assert re.search(fragment, err), err
    return out


@pytest.mark.parametrize("case", DIR_MISTAKES, ids=[c[0] for c in DIR_MISTAKES])
def test_cli_embed_on_bad_model_dirs(tiny, tmp_path, capsys, case):
    _, files, exc, fragment = case
    assert main(["embed", "--model-dir", tiny[0], *TEXTS]) == 0
    want = capsys.readouterr().out
    error_line(capsys, ["embed", "--model-dir", broken_dir(tiny[0], tmp_path, files), *TEXTS], exc.__name__, fragment)
    assert main(["embed", "--model-dir", tiny[0], *TEXTS]) == 0
    assert capsys.readouterr().out == want


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    d = tmp_path_factory.mktemp("onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    s = numpy_helper.from_array(np.array([2**29], np.int64), "s")
    graphs = {
        "good": ([helper.make_node("Mul", ["x", "w"], ["y"])], [w]),
        "one_input_add": ([helper.make_node("Add", ["x"], ["y"], name="add1")], []),
        "huge": ([helper.make_node("ConstantOfShape", ["s"], ["y"], name="cs")], [s]),
    }
    for name, (nodes, inits) in graphs.items():
        g = helper.make_graph(nodes, name, [x], [y], initializer=inits)
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(d / f"{name}.onnx"))
    (d / "junk.onnx").write_bytes(b"\x00\xffnot a protobuf" * 10)
    return d


INFO_MISTAKES = [
    ("missing file", ["missing.onnx"], "ModelFormatError", "no such file"),
    ("not ONNX", ["junk.onnx"], "ModelFormatError", "cannot parse"),
    ("dims not an int", ["good.onnx", "--dims", "batch=x"], "BindingError", "--dims batch: 'x' is not a non-negative integer"),
    ("dims without =", ["good.onnx", "--dims", "batch"], "BindingError", "--dims entries look like name=value, got 'batch'"),
    ("dims min > max", ["good.onnx", "--dims", "batch=5:1"], "BindingError", r"dims\['batch'\] = \(5, 1\)"),
    ("dims three parts", ["good.onnx", "--dims", "batch=1:2:3"], "BindingError", "'2:3' is not a non-negative integer"),
    ("dims negative", ["good.onnx", "--dims", "batch=-1:4"], "BindingError", "'-1' is not a non-negative integer"),
    ("dims unknown symbol", ["good.onnx", "--dims", "btach=1:4"], "BindingError", "unknown symbol.*did you mean 'batch'"),
    ("variant not an int", ["good.onnx", "--variant", "batch=x"], "BindingError", "--variant batch: 'x'"),
    ("variant out of bounds", ["good.onnx", "--dims", "batch=1:4", "--variant", "batch=9"], "BindingError", "outside its bounds"),
    ("malformed node", ["one_input_add.onnx"], "GraphError", r"'add1' \(Add\): has 1 input"),
    ("folded size over budget", ["huge.onnx"], "MemoryError", r"'cs' \(ConstantOfShape\): .* over the 1048576-byte budget"),
]


@pytest.mark.parametrize("case", INFO_MISTAKES, ids=[c[0] for c in INFO_MISTAKES])
def test_cli_info_mistakes(onnx_files, capsys, monkeypatch, case):
    _, argv, exc_name, fragment = case
    monkeypatch.setenv("RLX_MEMORY_LIMIT", str(2**20))

    def good():
        assert main(["info", str(onnx_files / "good.onnx")]) == 0
        return [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("imported in")]

    want = good()
    assert "symbols: batch in [1, 4096]" in want
    error_line(capsys, ["info", str(onnx_files / argv[0]), *argv[1:]], exc_name, fragment)
    assert good() == want


@pytest.mark.parametrize("module,args", [("rlx", ["embed", "--model-dir", "{tmp}/nope", "x"]), ("rlx", ["info", "{tmp}/nope.onnx"]),
                                         ("rlx.cli_info", ["{tmp}/nope.onnx"])])
def test_entry_points_exit_2_with_one_line(tmp_path, module, args):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rlx.__file__)))
    argv = [a.format(tmp=tmp_path) for a in args]
    out = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ModelFormatError: ") and len(out.stderr.splitlines()) == 1, out.stderr
    ok = subprocess.run([sys.executable, "-m", "rlx", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and "embed" in ok.stdout
