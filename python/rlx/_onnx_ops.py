"""Every ONNX op handler, registered: importing this module imports each op family's module.

The registry itself (``HANDLERS``, ``@op``, ``attrs``, the folding checks) is
``rlx._onnx_registry``; the helpers several op families share are ``rlx._onnx_helpers``.
"""

from __future__ import annotations

from typing import Any, List

from rlx import (  # noqa: F401  (each registers its ops on import)
    _onnx_ops_activation,
    _onnx_ops_attention,
    _onnx_ops_bitwise,
    _onnx_ops_control,
    _onnx_ops_einsum,
    _onnx_ops_elementwise,
    _onnx_ops_fold,
    _onnx_ops_gated,
    _onnx_ops_grid,
    _onnx_ops_index,
    _onnx_ops_layout,
    _onnx_ops_linalg,
    _onnx_ops_loss,
    _onnx_ops_lp,
    _onnx_ops_mask,
    _onnx_ops_math,
    _onnx_ops_ml,
    _onnx_ops_nn,
    _onnx_ops_norm,
    _onnx_ops_quantize,
    _onnx_ops_resize,
    _onnx_ops_rnn,
    _onnx_ops_sampling,
    _onnx_ops_shape,
    _onnx_ops_signal,
    _onnx_ops_state,
    _onnx_ops_text,
    _onnx_ops_training,
    _onnx_ops_vision,
)
from rlx._onnx_import import Importer, np_dtype
from rlx._onnx_registry import HANDLERS, STATIC_OPERANDS, check_supported

__all__ = ["HANDLERS", "SUPPORTED_OPS", "Importer", "check_supported", "np_dtype", "STATIC_OPERANDS"]


def supported_ops() -> List[str]:
    return sorted(HANDLERS)


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_OPS":
        return supported_ops()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
