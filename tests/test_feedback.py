"""Error feedback: conservation, the ECQ-SGD recursion, and bad input."""

import numpy as np
import pytest

import hpcq
from hpcq.feedback import ECQFeedback, ErrorFeedback, feedback
from hpcq.kernels import feedback as kfb


def _grads(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(d).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("spec", ["bf16", "fp16"])
def test_conservation_classic_ef(spec):
    """g + e_old == decoded + e_new (alpha = beta = 1), to float32 rounding."""
    ef = ErrorFeedback(hpcq.compressor(spec))
    e_old = np.zeros(257, np.float32)
    for t, g in enumerate(_grads(5, 257)):
        _, q = ef.encode(g, step=t)
        np.testing.assert_allclose(g + e_old, q + ef.memory, rtol=0, atol=1e-6)
        e_old = ef.memory.copy()


def test_ecq_recursion_matches_closed_form():
    """h_t = sum_{t'} beta^(t-1-t') (g_t' - Q(g_t' + alpha h_t')), papers.md 4(a)."""
    comp = hpcq.compressor("bf16")
    ef = feedback("ecq:alpha=0.5,beta=0.8", comp)
    assert isinstance(ef, ECQFeedback)
    errs = []
    for t, g in enumerate(_grads(6, 64, seed=1)):
        p = g + np.float32(0.5) * (ef.memory if ef.memory is not None else 0)
        _, q = ef.encode(g, step=t)
        np.testing.assert_array_equal(q, comp.decode(comp.encode(p.astype(np.float32))))
        errs.append(g - q)
        closed = sum(0.8 ** (len(errs) - 1 - k) * e for k, e in enumerate(errs))
        np.testing.assert_allclose(ef.memory, closed, rtol=1e-5, atol=1e-6)


def test_kernels_match_py_func():
    rng = np.random.default_rng(2)
    g, q, h = (rng.standard_normal(33).astype(np.float32) for _ in range(3))
    out1, out2 = np.empty_like(g), np.empty_like(g)
    kfb._compensate(g, h, 0.25, out1)
    kfb._compensate.py_func(g, h, 0.25, out2)
    np.testing.assert_array_equal(out1, out2)
    h1, h2 = h.copy(), h.copy()
    kfb._update(g, q, h1, 0.5)
    kfb._update.py_func(g, q, h2, 0.5)
    np.testing.assert_allclose(h1, h2, rtol=1e-6)


def test_memory_is_per_instance_and_resettable():
    comp = hpcq.compressor("bf16")
    a, b = ErrorFeedback(comp), ErrorFeedback(comp)
    a.encode(_grads(1, 8)[0])
    assert b.memory is None and a.memory is not None
    a.reset()
    assert a.memory is None


def test_bad_input():
    comp = hpcq.compressor("fp32")
    with pytest.raises(ValueError, match="beta"):
        ErrorFeedback(comp, beta=1.5)
    with pytest.raises(ValueError, match="alpha"):
        ErrorFeedback(comp, alpha=float("nan"))
    with pytest.raises(ValueError, match="valid"):
        feedback("nope", comp)
    with pytest.raises(ValueError, match="gamma"):
        feedback("ecq:gamma=1", comp)
    ef = ErrorFeedback(comp)
    ef.encode(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="length changed"):
        ef.encode(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="not finite"):
        ErrorFeedback(comp).encode(np.array([1.0, np.inf], np.float32))
