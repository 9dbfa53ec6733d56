"""Symbolic dims for the ONNX importer: integer polynomials over named symbols.

A shape value computed by an exporter's subgraph (``Shape -> Gather -> Unsqueeze -> Concat``)
is kept at import as a numpy object array whose elements are ``int`` or :class:`Poly`, so numpy
itself does the gathers, concats and slices; only arithmetic needs this class. The text form is
the one ``rlx.Graph`` parses (``"batch*seq"``, ``"12*s + 1"``).
"""

from __future__ import annotations

import re
from typing import Dict, Tuple, Union

Monomial = Tuple[str, ...]
DimLike = Union[int, "Poly"]


class Poly:
    """``sum(coeff * sym1 * sym2 ...)``; immutable and normalized (no zero coefficients)."""

    __slots__ = ("terms",)

    def __init__(self, terms: Dict[Monomial, int]) -> None:
        self.terms = {tuple(sorted(m)): c for m, c in terms.items() if c != 0}

    @staticmethod
    def sym(name: str) -> "Poly":
        return Poly({(name,): 1})

    @staticmethod
    def of(x: DimLike) -> "Poly":
        if isinstance(x, Poly):
            return x
        return Poly({(): int(x)})

    def const(self) -> int | None:
        if not self.terms:
            return 0
        if len(self.terms) == 1 and () in self.terms:
            return self.terms[()]
        return None

    def simplify(self) -> DimLike:
        """An ``int`` when constant, else the polynomial."""
        c = self.const()
        return self if c is None else c

    def symbols(self) -> set[str]:
        return {s for m in self.terms for s in m}

    def __add__(self, o: object) -> DimLike:
        o = _lift(o)
        t = dict(self.terms)
        for m, c in o.terms.items():
            t[m] = t.get(m, 0) + c
        return Poly(t).simplify()

    __radd__ = __add__

    def __neg__(self) -> DimLike:
        return Poly({m: -c for m, c in self.terms.items()}).simplify()

    def __sub__(self, o: object) -> DimLike:
        return self + (-_lift(o))

    def __rsub__(self, o: object) -> DimLike:
        return _lift(o) + (-self)

    def __mul__(self, o: object) -> DimLike:
        o = _lift(o)
        t: Dict[Monomial, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.terms.items():
                m = tuple(sorted(m1 + m2))
                t[m] = t.get(m, 0) + c1 * c2
        return Poly(t).simplify()

    __rmul__ = __mul__

    def exact_div(self, o: object) -> DimLike:
        """``self / o`` when every term divides by a single-term divisor; else ValueError."""
        o = _lift(o)
        if o.terms == self.terms and self.terms:
            return 1
        if len(o.terms) != 1:
            raise ValueError(f"cannot divide {self} by {o} symbolically")
        (dm, dc), = o.terms.items()
        out: Dict[Monomial, int] = {}
        for m, c in self.terms.items():
            rest = list(m)
            for s in dm:
                if s not in rest:
                    raise ValueError(f"cannot divide {self} by {o} symbolically")
                rest.remove(s)
            if c % dc:
                raise ValueError(f"cannot divide {self} by {o} symbolically")
            out[tuple(rest)] = c // dc
        return Poly(out).simplify()

    def __floordiv__(self, o: object) -> DimLike:
        return self.exact_div(o)

    def __rfloordiv__(self, o: object) -> DimLike:
        return _lift(o).exact_div(self)

    __truediv__ = __floordiv__
    __rtruediv__ = __rfloordiv__

    def __eq__(self, o: object) -> bool:
        if isinstance(o, (int, Poly)) or hasattr(o, "__index__"):
            return self.terms == _lift(o).terms
        return NotImplemented

    def __ne__(self, o: object) -> bool:
        eq = self.__eq__(o)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.terms.items())))

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        order = sorted(self.terms, key=lambda m: (-len(m), m))
        parts = []
        for i, m in enumerate(order):
            c = self.terms[m]
            body = "*".join(m)
            mag = abs(c) if i else c
            if not body:
                txt = str(mag)
            elif mag == 1:
                txt = body
            else:
                txt = f"{mag}*{body}"
            if i:
                parts.append(("- " if c < 0 else "+ ") + txt)
            else:
                # The rlx parser takes no leading minus: write `0 - s`.
                parts.append(f"0 - {txt[1:] if txt.startswith('-') else txt}" if c < 0 and body else txt)
        return " ".join(parts)

    __repr__ = __str__


def _lift(o: object) -> Poly:
    if isinstance(o, Poly):
        return o
    if hasattr(o, "__index__"):
        return Poly.of(int(o))  # type: ignore[call-overload]
    raise TypeError(f"not a dim: {o!r}")


_TERM = re.compile(r"\s*([+-]?)\s*([^+-]+)")


def parse_dim(text: Union[int, str]) -> DimLike:
    """A dim as ``rlx.Value.shape`` reports it (an int or text such as ``"b*s + 1"``)."""
    if isinstance(text, int):
        return text
    total: DimLike = 0
    s = text.strip()
    if s.startswith("0 - "):
        s = "-" + s[4:]
    for sign, body in _TERM.findall(s):
        term: DimLike = 1
        for f in body.strip().split("*"):
            f = f.strip()
            term = term * (int(f) if f.isdigit() else Poly.sym(f))
        total = total + (-term if sign == "-" else term)
    return total


def dim_text(d: DimLike) -> Union[int, str]:
    """What ``rlx.Graph`` takes for one dim."""
    return d if isinstance(d, int) else str(d)
