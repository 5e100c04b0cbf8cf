"""Kernel conventions that a reviewer would otherwise check by eye (style practice 2)."""

import ast
import re
from pathlib import Path

import numpy as np

from hpcq.kernels import rng

KERNELS = Path(__file__).resolve().parent.parent / "kernels"


def test_no_kernel_hard_codes_numeric_flags():
    """fastmath/parallel come from kernels/_config.py only (no such keyword in any call)."""
    offenders = []
    for path in KERNELS.glob("*.py"):
        if path.name == "_config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(
                k.arg in ("fastmath", "parallel") for k in node.keywords
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"kernels that set fastmath/parallel themselves: {offenders}"


def test_no_top_level_kernels_import():
    root = KERNELS.parent
    pat = re.compile(r"^\s*(from|import)\s+kernels\b", re.M)
    files = [p for d in ("hpcq", "kernels", "analysis", "jobs", "tests")
             for p in (root / d).rglob("*.py")]
    bad = [str(p.relative_to(root)) for p in files if pat.search(p.read_text(errors="ignore"))]
    assert not bad, f"`import kernels` found in {bad}; import hpcq.kernels instead"


def test_rng_matches_python_twin_and_keys_differ():
    key = rng.derive_key(7, rng.PURPOSE_ROUNDING, 3, 1)
    assert int(rng.bits64(key, 0)) == rng.bits64_py(int(key), 0)
    assert int(rng.bits64(key, 12345)) == rng.bits64_py(int(key), 12345)
    assert rng.derive_key(1, 2) != rng.derive_key(2, 1)
    u = np.array([rng.uniform24(key, i) for i in range(4000)], dtype=np.float32)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.02


def test_compiled_key_derivation_matches_python():
    from hpcq.compressors.base import Keys

    for seed, step, rank in [(0, 0, 0), (7, 3, 1), (2**64 - 1, 2**32 - 1, 5)]:
        keys = Keys.derive(seed, step, rank)
        assert keys.private == rng.derive_key(seed, rng.PURPOSE_ROUNDING, step, rank)
        assert keys.indices == rng.derive_key(seed, rng.PURPOSE_INDICES, step)
        assert keys.signs == rng.derive_key(seed, rng.PURPOSE_SIGNS, step)
