"""Kernel paths: every ISA this CPU has gives the reference result; RLX_ISA and isa= force a
path; a path the CPU lacks, or an unknown name, is a clear error."""

import os
import subprocess
import sys

import numpy as np
import pytest

import rlx
from conftest import MLP_IN, MLP_SHAPES, mlp_graph, mlp_ref, weights

TOL = dict(rtol=2e-4, atol=2e-5)
ALL = ["scalar", "avx2", "avx512"]


def test_the_default_path_is_one_the_cpu_has():
    assert rlx.available_isas()[0] == "scalar"
    assert set(rlx.available_isas()) <= set(ALL)
    assert rlx.cpu_isa() in rlx.available_isas()


@pytest.mark.parametrize("isa", rlx.available_isas())
@pytest.mark.parametrize("prepack", [True, False])
def test_every_available_path_matches_the_reference(rng, isa, prepack):
    pipe = rlx.ModelCompilePipeline(mlp_graph(), isa=isa, prepack=prepack)
    params = weights(rng, MLP_SHAPES)
    pipe.bind_params(params)
    for batch in (1, 7, 300):
        x = rng.standard_normal((batch, MLP_IN)).astype(np.float32)
        np.testing.assert_allclose(pipe.get_or_compile(batch=batch).run(x=x)["probs"], mlp_ref(x, params), **TOL)
    assert pipe.isa == isa and pipe.stats["isa"] == isa
    assert (pipe.stats["packed_bytes"] > 0) == prepack


@pytest.mark.parametrize("isa", [i for i in ALL if i not in rlx.available_isas()] + ["avx9"])
def test_a_path_the_cpu_lacks_or_an_unknown_name_is_an_error(isa):
    with pytest.raises(rlx.CompileError, match=isa):
        rlx.ModelCompilePipeline(mlp_graph(), isa=isa)


def _with_env(value: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RLX_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_rlx_isa_forces_the_default_path():
    out = _with_env("scalar", "import rlx; print(rlx.cpu_isa(), rlx.ModelCompilePipeline.__name__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "scalar"


def test_a_bad_rlx_isa_is_a_typed_error_naming_the_variable():
    code = (
        "import rlx\n"
        "try:\n    rlx.cpu_isa()\nexcept rlx.CompileError as e:\n    print('CompileError', e)\n"
    )
    out = _with_env("sse9", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("CompileError") and "RLX_ISA" in out.stdout and "sse9" in out.stdout
