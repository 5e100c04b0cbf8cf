"""The problem library: objectives whose samples are split by rows across MPI ranks.

``problem("lstsq:m=256,n=64,kappa=10", rank=r, size=p, seed=s)`` parses a spec and
returns this rank's :class:`~hpcq.problems.base.Problem`; ``problems()`` lists
them all.  Spec grammar (as for compressors)::

    spec := name [":" key "=" value ("," key "=" value)*]

The name ends at the first ``:``, so values may hold ``:`` (``data=sklearn:digits``)
but not ``,``: a data path with a comma is not supported.  Keyword arguments
override values given in the string.  Each problem lives in its own module and
registers itself with ``@PROBLEMS.register(name)``.
"""

from __future__ import annotations

from typing import Any

from hpcq.problems.base import Problem, row_block
from hpcq.registry import Registry

PROBLEMS: Registry[type[Problem]] = Registry("problem")


def _split_kv(text: str, owner: str) -> dict[str, str]:
    """``key=value,key=value`` as a dict; a value may hold ``=`` and ``:``."""
    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"{owner}: expected key=value, got {item!r}")
        if key in out:
            raise ValueError(f"{owner}: parameter {key} given twice")
        out[key] = value.strip()
    return out


def problem(spec: str, *, rank: int = 0, size: int = 1, seed: int = 0,
            **overrides: Any) -> Problem:
    """Build rank ``rank``'s share of a problem from a spec string.

    Parameters
    ----------
    spec
        ``name[:key=value,...]``, e.g. ``"logistic:data=sklearn:breast_cancer,reg=0.01"``.
        Values may contain ``:`` and ``=`` but not ``,``.
    rank, size
        This rank and the number of ranks the rows are split over.
    seed
        Seeds the synthetic data and the starting point (identical on every rank).
    **overrides
        Parameter values that replace those of the string.

    Raises
    ------
    ValueError
        Unknown problem or parameter (listing the valid ones), a bad value, or
        unreadable data.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"problem spec must be a non-empty string, got {spec!r}")
    name, _, text = spec.strip().partition(":")
    cls = PROBLEMS.get(name.strip())
    values: dict[str, Any] = dict(_split_kv(text, f"problem {name.strip()}"))
    values.update(overrides)
    return cls(rank=rank, size=size, seed=seed, **values)


def problems() -> dict[str, dict[str, Any]]:
    """Every registered problem: summary and parameters (type, default, doc, choices)."""
    return {
        name: {
            "summary": cls.summary,
            "params": {
                p.name: {"type": p.kind.__name__, "default": p.default, "doc": p.doc,
                         **({"choices": list(p.choices)} if p.choices else {})}
                for p in cls.params
            },
        }
        for name, cls in PROBLEMS.items()
    }


# Importing the problem modules registers them (order irrelevant).
from hpcq.problems import logistic, lstsq, mlp, quadratic, softmax  # noqa: E402,F401

__all__ = ["PROBLEMS", "Problem", "problem", "problems", "row_block"]
