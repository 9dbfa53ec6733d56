"""rlx: compile a symbolic model graph once, specialize it per shape, run it fast on the CPU.

The classes live in the compiled extension ``rlx._rlx``; this package re-exports them and adds
shape bucketing (``rlx.bucketing``): ``pipe.bucketed(seq="pow2")`` or ``rlx.bucketed(pipe, ...)``.
"""

from rlx._rlx import (
    BindingError,
    BindingManifest,
    CacheError,
    CompiledGraph,
    CompileError,
    DTypeError,
    Graph,
    GraphError,
    ManifestDiff,
    ManifestEntry,
    ModelCompilePipeline,
    ModelFormatError,
    RlxError,
    ShapeError,
    Specialized,
    UnsupportedOpError,
    Value,
    __version__,
    available_isas,
    cpu_isa,
)
from rlx import bucketing as _bucketing
from rlx.bucketing import Bucketed, bucketed

try:  # `pipe.bucketed(seq=...)`: the extension class takes new attributes from Python
    ModelCompilePipeline.bucketed = _bucketing._pipeline_bucketed  # type: ignore[attr-defined]
except (AttributeError, TypeError):  # an immutable type: rlx.bucketed(pipe, ...) still works
    pass

__all__ = [
    "available_isas",
    "bucketed",
    "Bucketed",
    "cpu_isa",
    "BindingError",
    "BindingManifest",
    "CacheError",
    "CompiledGraph",
    "CompileError",
    "DTypeError",
    "Graph",
    "GraphError",
    "ManifestDiff",
    "ManifestEntry",
    "ModelCompilePipeline",
    "ModelFormatError",
    "RlxError",
    "ShapeError",
    "Specialized",
    "UnsupportedOpError",
    "Value",
    "__version__",
]
