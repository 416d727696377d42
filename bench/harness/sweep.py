"""Parameter sweeps: ``--sweep NAME=v1,v2,...`` (one or more) over the methods' settings.

Every combination of swept values is a *variant* of a method, labelled ``method[name=value,...]``
(e.g. ``si-ld[margin=2]``); the label is the method's name in the records, the unit ids and the
tables, so each value is its own row and ``--resume`` reuses every finished unit of a sweep. A
value that does not affect a method is not part of its label: ``telea`` runs once in a margin
sweep, ``si`` once in a steering-weight sweep.

A *choice-only* parameter (the landmark margin) enters only the final choice among a search's
candidates, never the search: the variants of a method that differ only in it share one search
(:func:`share_groups`), and each still gets its own labelled records.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Callable, Sequence, Union

Value = Union[int, float]


def _latent(info) -> bool:
    return info.family == "latent"


def _counts_landmarks(info) -> bool:
    return info.family == "latent" and info.search.landmark_count


def _steers(info) -> bool:
    return info.family == "latent" and info.search.steer is not None


@dataclasses.dataclass(frozen=True)
class SweepParam:
    """A sweepable setting: its command-line name, the ``InpaintConfig`` field it sets, its
    type and smallest value, and which methods it affects (a predicate on ``MethodInfo``)."""

    name: str
    field: str
    kind: type
    minimum: Value
    affects: Callable
    help: str
    choice_only: bool = False  # enters only the final choice among candidates (shared searches)


PARAMS: dict[str, SweepParam] = {
    p.name: p
    for p in (
        SweepParam(
            "margin",
            "landmark_margin_px",
            float,
            0.0,
            _counts_landmarks,
            "landmark margin in px (Ld)",
            choice_only=True,
        ),
        SweepParam("lambda", "prior_weight", float, 0.0, _latent, "prior loss weight"),
        SweepParam("candidates", "candidates", int, 1, _latent, "latents per image"),
        SweepParam("iters", "iters", int, 0, _latent, "latent-search Adam steps"),
        SweepParam("steer", "steer_weight", float, 0.0, _steers, "landmark steering weight mu"),
    )
}
Sweep = tuple[str, tuple]  # (param name, values in the order given)


def format_value(v: Value) -> str:
    """Shortest faithful text: ``2.0 -> "2"``, ``0.003 -> "0.003"``, ``16 -> "16"``."""
    return str(v) if isinstance(v, int) else f"{v:g}" if float(f"{v:g}") == v else repr(v)


def parse_sweep(spec: str) -> Sweep:
    """``"margin=1,2,3"`` -> ``("margin", (1.0, 2.0, 3.0))``.

    Raises:
        ValueError: no ``=``, an unknown name, an empty, repeated, malformed or out-of-range
            value; the message names the spec.
    """
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"--sweep must be NAME=v1,v2,..., got {spec!r}")
    if name not in PARAMS:
        raise ValueError(f"--sweep {spec!r}: unknown parameter {name!r}; known: {', '.join(PARAMS)}")
    p = PARAMS[name]
    out = []
    for text in (t.strip() for t in values.split(",")):
        try:
            v = p.kind(text) if p.kind is float else int(text, 10)
        except ValueError:
            raise ValueError(
                f"--sweep {spec!r}: {text!r} is not {'an integer' if p.kind is int else 'a number'}"
            ) from None
        if not math.isfinite(v) or v < p.minimum:
            raise ValueError(f"--sweep {spec!r}: {name} must be >= {p.minimum} and finite, got {text}")
        if v in out:
            raise ValueError(f"--sweep {spec!r}: value {text} is repeated")
        out.append(v)
    return name, tuple(out)


def parse_sweeps(specs: Sequence[str]) -> tuple[Sweep, ...]:
    """Several ``--sweep`` specs; a parameter may be swept once."""
    sweeps = tuple(parse_sweep(s) for s in specs)
    names = [n for n, _ in sweeps]
    for n in names:
        if names.count(n) > 1:
            raise ValueError(f"--sweep: {n} is swept twice; give all its values in one NAME=v1,v2,...")
    return sweeps


@dataclasses.dataclass(frozen=True)
class Variant:
    """A method with some settings fixed by a sweep. ``params``: ``((name, value), ...)`` in
    the order of the sweeps."""

    method: str
    params: tuple = ()

    @property
    def label(self) -> str:
        if not self.params:
            return self.method
        return f"{self.method}[{','.join(f'{n}={format_value(v)}' for n, v in self.params)}]"

    def overrides(self) -> dict:
        """``InpaintConfig`` field -> value."""
        return {PARAMS[n].field: v for n, v in self.params}

    def sweep_values(self) -> dict:
        """Sweep name -> value (for the records)."""
        return dict(self.params)


def expand(methods: Sequence[str], sweeps: Sequence[Sweep]) -> list[Variant]:
    """Every method's variants: the product of the sweeps that affect it, in the given order
    (methods first, then values); a method no sweep affects is one unlabelled variant."""
    from facefill_core.methods import method_info

    out = []
    for m in methods:
        info = method_info(m)
        mine = [(n, vals) for n, vals in sweeps if PARAMS[n].affects(info)]
        for combo in itertools.product(*(vals for _, vals in mine)):
            out.append(Variant(m, tuple((n, v) for (n, _), v in zip(mine, combo))))
    return out


def share_groups(variants: Sequence[Variant]) -> list[list[Variant]]:
    """Group ``variants`` (order kept) so that each group's members differ only in choice-only
    parameters: one search serves the group (its first member's), each member has its own choice."""
    groups: dict = {}
    for v in variants:
        key = (v.method, tuple((n, x) for n, x in v.params if not PARAMS[n].choice_only))
        groups.setdefault(key, []).append(v)
    return list(groups.values())


_LABEL = re.compile(r"^(?P<method>[^\[\]=,]+)(?:\[(?P<params>[^\[\]]+)\])?$")


def parse_label(label: str) -> Variant:
    """Inverse of :attr:`Variant.label`: ``"si-ld[margin=2]"`` -> ``Variant("si-ld", (("margin", 2.0),))``.

    Raises:
        ValueError: not ``method`` or ``method[name=value,...]`` with known names.
    """
    m = _LABEL.match(label)
    if not m:
        raise ValueError(f"method label must be NAME or NAME[param=value,...], got {label!r}")
    params = []
    for item in m.group("params").split(",") if m.group("params") else []:
        name, values = parse_sweep(item)
        if len(values) != 1:
            raise ValueError(f"method label {label!r}: one value per parameter, got {item!r}")
        params.append((name, values[0]))
    return Variant(m.group("method"), tuple(params))


def sort_key(label: str, method_order: Sequence[str]) -> tuple:
    """Order labels by method (``method_order`` first, others by name), then by their swept
    values numerically: ``si-ld[margin=2]`` before ``si-ld[margin=10]``."""
    v = parse_label(label)
    rank = method_order.index(v.method) if v.method in method_order else len(method_order)
    return (rank, v.method, tuple(n for n, _ in v.params), tuple(float(x) for _, x in v.params))
