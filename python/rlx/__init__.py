"""rlx: compile a symbolic model graph once, specialize it per shape, run it fast on the CPU.

The classes live in the compiled extension ``rlx._rlx``; this package re-exports them.
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

__all__ = [
    "available_isas",
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
