"""Reading a model's ``config.json``: every failure is an ``rlx.ModelFormatError`` naming it."""

from __future__ import annotations

import json
from typing import Any

import rlx


def load_json(path: str, label: str) -> Any:
    """The parsed JSON at ``path``; ``label`` ("BERT config") starts every error message."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise rlx.ModelFormatError(f"{label} {path!r}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise rlx.ModelFormatError(f"{label} {path!r}: not valid JSON: {e}") from None
    except RecursionError:
        raise rlx.ModelFormatError(f"{label} {path!r}: JSON nested too deeply") from None
