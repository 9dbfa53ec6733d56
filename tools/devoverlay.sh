#!/usr/bin/env bash
# Python-only development without a rebuild: a package directory of symlinks to python/rlx
# plus the installed native module. Use: PYTHONPATH=$(tools/devoverlay.sh) python -m pytest ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dst=${RLX_DEV_OVERLAY:-/tmp/rlxdev}
so=$(python -c "import rlx._rlx as m; print(m.__file__)" 2>/dev/null || true)
rm -rf "$dst/rlx" && mkdir -p "$dst/rlx"
for f in "$root"/python/rlx/*; do ln -s "$f" "$dst/rlx/$(basename "$f")"; done
[ -n "$so" ] && ln -sf "$so" "$dst/rlx/$(basename "$so")"
echo "$dst"
