"""Training methods: local gradient -> compress -> collective -> update, on any communicator.

``method("ecq-sgd:alpha=0.5,beta=0.9")`` parses a spec and returns a
:class:`~hpcq.algorithms.base.Method`; :func:`train` runs it on every rank of a
communicator and returns this rank's :class:`~hpcq.algorithms.base.Trace`.
``methods()`` lists them all.  Families:

* :mod:`hpcq.algorithms.compressed`: gd (and mini-batch SGD), vqsgd, ef-sgd,
  ef-signsgd, ecq-sgd, each with bounded staleness;
* :mod:`hpcq.algorithms.dq`: dqgd, dq-hb, dq-nag, naive-qgd, hb, nag.

Spec grammar: ``name[:key=value,key=value]``, as for compressors.
"""

from __future__ import annotations

from typing import Any

from hpcq.registry import Registry

METHODS: Registry[Any] = Registry("method")


def _split(spec: str) -> tuple[str, dict[str, str]]:
    from hpcq.compressors import _split_kv

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"method spec must be a non-empty string, got {spec!r}")
    name, colon, text = spec.strip().partition(":")
    return name.strip(), _split_kv(text, name.strip(), bool(colon))


def method(spec: str, **overrides: Any) -> Any:
    """Build a method from its spec, e.g. ``"dqgd:bits=4"``; ValueError naming what is wrong."""
    name, values = _split(spec)
    cls = METHODS.get(name)
    return cls(**{**values, **overrides})


def methods() -> dict[str, dict[str, Any]]:
    """Every registered method: summary, whether it takes the job's compressor, parameters."""
    return {
        name: {
            "summary": cls.summary,
            "takes_compressor": cls.takes_compressor,
            "params": {p.name: {"type": p.kind.__name__, "default": p.default, "doc": p.doc,
                                **({"choices": list(p.choices)} if p.choices else {})}
                       for p in cls.params},
        }
        for name, cls in METHODS.items()
    }


def train(ctx: Any, spec: str) -> Any:
    """Run method ``spec`` in context ``ctx`` (every rank of ``ctx.comm``); this rank's trace."""
    m = method(spec)
    m.check(ctx)
    return m.run(ctx)


from hpcq.algorithms import compressed, dq  # noqa: E402,F401  (registers the methods)

__all__ = ["METHODS", "method", "methods", "train"]
