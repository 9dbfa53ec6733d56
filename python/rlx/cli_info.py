"""``python -m rlx info model.onnx``: what rlx makes of an ONNX model (symbols, params, manifest).

Bad arguments and bad models raise typed rlx errors; ``rlx.__main__.main`` prints them as one
``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple


def _pairs(text: Optional[str], what: str) -> Dict[str, str]:
    import rlx

    out: Dict[str, str] = {}
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise rlx.BindingError(f"{what} entries look like name=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _int(text: str, what: str) -> int:
    import rlx

    if not re.fullmatch(r"[0-9]+", text):
        raise rlx.BindingError(f"{what}: {text!r} is not a non-negative integer")
    return int(text)


def _bounds(text: Optional[str]) -> Dict[str, Tuple[int, int]]:
    out = {}
    for k, v in _pairs(text, "--dims").items():
        lo, _, hi = v.partition(":")
        out[k] = (_int(lo, f"--dims {k}"), _int(hi or lo, f"--dims {k}"))
    return out


def info_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m rlx info", description=__doc__)
    p.add_argument("model", help="path to a .onnx file")
    p.add_argument("--dims", help="symbol bounds, e.g. batch=1:64,seq=1:256")
    p.add_argument("--variant", help="also print the manifest of one variant, e.g. batch=2,seq=128")
    p.add_argument("--params", type=int, default=10, help="how many params to list (largest first)")
    args = p.parse_args(list(argv))

    import rlx
    import rlx.onnx

    bounds = _bounds(args.dims)
    binding = {k: _int(v, f"--variant {k}") for k, v in _pairs(args.variant, "--variant").items()}
    proto, _ = rlx.onnx._read_model(args.model)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    print(f"model: {args.model}  (producer {proto.producer_name or '?'} {proto.producer_version}, opsets {opsets})")
    print(f"ONNX nodes: {sum(ops.values())}  " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))
    om = rlx.onnx.load(args.model, dims=bounds)
    g = om.graph
    print(f"imported in {om.import_seconds * 1e3:.1f} ms -> rlx graph of {len(g)} nodes")
    print("symbols: " + (", ".join(f"{k} in [{lo}, {hi}]" for k, (lo, hi) in om.symbols.items()) or "none"))
    total = sum(a.nbytes for a in om.params.values())
    mapped = sum(a.nbytes for a in om.params.values() if hasattr(a, "filename"))
    print(f"params: {len(om.params)} tensors, {total / 2**20:.2f} MiB" + (f" ({mapped / 2**20:.2f} MiB memory-mapped)" if mapped else ""))
    for name, a in sorted(om.params.items(), key=lambda kv: -kv[1].nbytes)[: args.params]:
        print(f"  {name:<48} {str(a.dtype):<8} {str(tuple(a.shape)):<16} {a.nbytes:>12,} B")
    if len(om.params) > args.params:
        print(f"  ... {len(om.params) - args.params} more")
    for note in om.notes:
        print(f"note: {note}")
    for conv in om.conversions[:10]:
        print(f"dtype conversion: {conv}")
    if len(om.conversions) > 10:
        print(f"  ... {len(om.conversions) - 10} more dtype conversion(s)")
    pipe = rlx.ModelCompilePipeline(g)
    print("\ntemplate manifest:")
    print(pipe.manifest)
    if binding:
        print(f"\nmanifest for {binding}:")
        print(pipe.manifest_for(binding))
    return 0


def main() -> None:
    from rlx.__main__ import main as rlx_main

    raise SystemExit(rlx_main(["info", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
