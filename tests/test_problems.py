"""Problems: gradients against finite differences, the rank-scaling conventions,
mini-batches, the known constants, and the errors for bad parameters."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hpcq.problems import PROBLEMS, problem, problems

# Small instances of every problem (and of the variants whose code differs).
SMALL = [
    "lstsq:m=40,n=8,kappa=5",
    "lstsq:m=40,n=8,kappa=5,spacing=log,scale=mean,reg=0.1,noise=0.3",
    "lstsq:matrix=gaussian,m=30,n=6,noise=0.1,reg=0.01,scale=mean",
    "lstsq:matrix=heavy,m=50,n=5",
    "logistic:m=60,n=5,reg=0.01",
    "softmax:m=50,n=4,classes=3,reg=0.01,bias=true",
    "softmax:m=50,n=4,classes=3,reg=0",
    "mlp:m=40,n=4,classes=3,hidden=5,reg=0.01",
    "mlp:m=40,n=4,classes=3,hidden=5,activation=relu",
    "quadratic:d=50,spacing=log,kappa=100",
]
WITH_ROWS = [s for s in SMALL if not s.startswith("quadratic")]


def _point(prob, seed: int = 7) -> np.ndarray:
    """A random point near the start, away from the optimum."""
    rng = np.random.default_rng(seed)
    return prob.x0() + 0.5 * rng.standard_normal(prob.d)


def _f(spec: str, size: int, x: np.ndarray, seed: int = 3) -> float:
    return sum(problem(spec, rank=r, size=size, seed=seed).loss(x) for r in range(size))


@pytest.mark.parametrize("spec", SMALL)
def test_gradient_matches_central_differences(spec: str) -> None:
    prob = problem(spec, seed=3)
    x = _point(prob)
    g = prob.grad(x)
    h = 1e-5 * max(1.0, float(np.abs(x).max()))
    fd = np.empty(prob.d)
    for i in range(prob.d):
        e = np.zeros(prob.d)
        e[i] = h
        fd[i] = (prob.loss(x + e) - prob.loss(x - e)) / (2 * h)
    assert np.linalg.norm(fd - g) <= 1e-6 * np.linalg.norm(g), spec


@pytest.mark.parametrize("spec", SMALL)
@pytest.mark.parametrize("size", [3, 7])
def test_rank_shares_mean_to_the_gradient_and_sum_to_f(spec: str, size: int) -> None:
    """Size 7 leaves ranks with few rows; shares are those of the package convention."""
    whole = problem(spec, seed=3)
    x = _point(whole)
    shares = [problem(spec, rank=r, size=size, seed=3) for r in range(size)]
    mean = np.mean([p.grad(x) for p in shares], axis=0)
    g = whole.grad(x)
    assert np.linalg.norm(mean - g) <= 1e-10 * np.linalg.norm(g)
    assert sum(p.loss(x) for p in shares) == pytest.approx(whole.loss(x), rel=1e-12)
    assert sum(p.n_local for p in shares) == whole.m
    for key in ("d", "L", "mu", "f_star"):
        assert all(getattr(p, key) == getattr(whole, key) for p in shares)


@pytest.mark.parametrize("spec", ["lstsq:m=3,n=2,kappa=2,reg=0.5", "logistic:m=3,n=2",
                                  "softmax:m=3,n=2,classes=2", "mlp:m=3,n=2,classes=2,hidden=3"])
def test_ranks_without_rows_hold_only_the_regulariser(spec: str) -> None:
    size = 5
    whole = problem(spec, seed=1)
    x = _point(whole)
    shares = [problem(spec, rank=r, size=size, seed=1) for r in range(size)]
    empty = shares[-1]
    assert empty.n_local == 0
    reg = whole.p["reg"]
    assert np.allclose(empty.grad(x), reg * x, rtol=0, atol=1e-15)
    assert empty.loss(x) == pytest.approx(0.5 * reg / size * (x @ x), abs=1e-15)
    mean = np.mean([p.grad(x) for p in shares], axis=0)
    assert np.allclose(mean, whole.grad(x), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="no samples"):
        empty.batch(4, seed=0, step=0)


@pytest.mark.parametrize("spec", WITH_ROWS)
def test_batch_of_all_rows_is_the_full_share(spec: str) -> None:
    for rank in range(2):
        prob = problem(spec, rank=rank, size=2, seed=3)
        x = _point(prob)
        full = prob.grad(x)
        every = prob.grad(x, np.arange(prob.n_local))
        assert np.allclose(every, full, rtol=1e-12, atol=1e-14 * np.abs(full).max())


@pytest.mark.parametrize("spec", WITH_ROWS)
def test_minibatch_gradient_is_unbiased(spec: str) -> None:
    prob = problem(spec, rank=1, size=2, seed=3)
    x = _point(prob)
    full = prob.grad(x)
    n = 1500
    draws = np.array([prob.grad(x, prob.batch(4, seed=11, step=t)) for t in range(n)])
    err = np.linalg.norm(draws.mean(axis=0) - full)
    sd = np.sqrt(draws.var(axis=0).sum() / n)  # std of the mean's error norm, roughly
    assert err <= 6 * sd + 1e-12 * np.linalg.norm(full), (spec, err, sd)


def test_batches_are_reproducible_and_local() -> None:
    prob = problem("lstsq:m=40,n=4", rank=1, size=3, seed=0)
    b = prob.batch(16, seed=5, step=9)
    assert np.array_equal(b, prob.batch(16, seed=5, step=9))
    assert b.min() >= 0 and b.max() < prob.n_local
    for bad in (np.array([prob.n_local]), np.array([-1]), np.array([], dtype=int),
                np.array([0.5])):
        with pytest.raises(ValueError, match="batch"):
            prob.grad(prob.x0(), bad)


@pytest.mark.parametrize("spec", SMALL)
def test_grad_writes_into_out(spec: str) -> None:
    prob = problem(spec, seed=2)
    x = _point(prob)
    out = np.full(prob.d, np.nan)
    assert prob.grad(x, out=out) is out
    assert np.array_equal(out, prob.grad(x))
    with pytest.raises(ValueError, match="out"):
        prob.grad(x, out=np.empty(prob.d, dtype=np.float32))
    with pytest.raises(ValueError, match="out"):
        prob.grad(x, out=np.empty(prob.d + 1))


@pytest.mark.parametrize("spec", SMALL)
def test_spec_round_trips(spec: str) -> None:
    a = problem(spec, rank=1, size=2, seed=4)
    b = problem(a.spec, rank=1, size=2, seed=4)
    assert b.spec == a.spec
    x = _point(a)
    assert np.array_equal(a.grad(x), b.grad(x)) and a.loss(x) == b.loss(x)
    assert problem(spec, seed=5).loss(x) != a.loss(x) or a.name == "quadratic"


# ---------------------------------------------------------------------- lstsq
@pytest.mark.parametrize("extra", ["", ",spacing=log", ",scale=mean", ",reg=0.25"])
def test_lstsq_spectrum_is_exact(extra: str) -> None:
    prob = problem(f"lstsq:m=100,n=20,kappa=10,L=2{extra}", seed=1)
    reg = prob.p["reg"]
    H = prob.c * prob.A.T @ prob.A + reg * np.eye(prob.d)
    w = np.linalg.eigvalsh(H)
    assert prob.L == 2 + reg and prob.mu == 0.2 + reg
    assert abs(w[-1] - prob.L) <= 1e-10 * prob.L and abs(w[0] - prob.mu) <= 1e-10 * prob.L
    if not reg:
        assert prob.kappa == pytest.approx(10, rel=1e-14)
    if "log" in extra:
        assert np.allclose(np.diff(np.log(w)), np.log(10) / 19, rtol=1e-8)
    else:
        assert np.allclose(np.diff(w), 1.8 / 19, rtol=1e-8)
    assert np.linalg.norm(prob.grad(prob.x_star)) <= 1e-12 * prob.L
    assert prob.f_star == pytest.approx(prob.loss(prob.x_star), abs=1e-15)


def test_lstsq_noise_free_optimum_is_the_planted_one() -> None:
    prob = problem("lstsq:m=64,n=16", seed=0)
    assert prob.f_star <= 1e-25
    noisy = problem("lstsq:m=64,n=16,noise=0.5", seed=0)
    assert noisy.f_star > 1.0
    assert np.linalg.norm(noisy.grad(noisy.x_star)) <= 1e-12


def test_lstsq_heavy_follows_the_dgd_def_protocol() -> None:
    prob = problem("lstsq:matrix=heavy", seed=0)
    assert prob.A.shape == (500, 116) and prob.spec.startswith("lstsq:matrix=heavy,m=500,n=116")
    rng = np.random.default_rng([0, 0x6C73])
    assert np.array_equal(prob.A, rng.standard_normal((500, 116)) ** 5)
    w = np.linalg.eigvalsh(prob.A.T @ prob.A)
    assert prob.L == pytest.approx(w[-1], rel=1e-12) and prob.mu == pytest.approx(w[0], rel=1e-10)
    assert np.linalg.norm(prob.grad(prob.x_star)) <= 1e-12 * prob.L * np.linalg.norm(prob.x_star)
    x0 = problem("lstsq:matrix=heavy,x0=randn", seed=0, rank=1, size=2).x0()
    assert np.array_equal(x0, problem("lstsq:matrix=heavy,x0=randn", seed=0).x0())
    assert np.abs(x0).min() > 0


def test_lstsq_rank_deficient_gets_the_minimum_norm_solution() -> None:
    prob = problem("lstsq:matrix=gaussian,m=10,n=30", seed=2)
    assert prob.mu == 0.0 and prob.kappa is None
    expected = np.linalg.pinv(prob.A) @ prob.y
    assert np.allclose(prob.x_star, expected, rtol=1e-10, atol=1e-12)
    assert prob.f_star == pytest.approx(0.0, abs=1e-20)


# ---------------------------------------------------------------------- logistic
def test_logistic_optimum_and_constants() -> None:
    prob = problem("logistic", seed=0)
    assert prob.d == 50 and prob.m == 1000 and prob.mu == 1e-3
    assert np.linalg.norm(prob.grad(prob.x_star)) <= 1e-11
    A, x = prob.A, prob.x_star
    s = 1 / (1 + np.exp(-A @ x))
    H = A.T @ (A * (s * (1 - s))[:, None]) / prob.m + prob.mu * np.eye(prob.d)
    w = np.linalg.eigvalsh(H)
    assert prob.mu <= w[0] and w[-1] <= prob.L <= 4 * w[-1] + 1  # a valid, not absurd bound
    assert prob.f_star == pytest.approx(prob.loss(prob.x_star), rel=1e-14)
    assert prob.f_star < np.log(2)  # better than x = 0
    assert problem("logistic:m=30,n=4,bias=true", seed=0).d == 5


def test_logistic_is_stable_for_huge_margins() -> None:
    prob = problem("logistic:m=20,n=3", seed=0)
    x = 1e6 * np.ones(3)
    assert np.isfinite(prob.loss(x)) and np.all(np.isfinite(prob.grad(x)))


# ---------------------------------------------------------------------- softmax
def test_softmax_smoothness_bound_holds() -> None:
    prob = problem("softmax:m=200,n=6,classes=4,reg=0.01", seed=0)
    assert prob.mu == 0.01 and prob.x_star is None and prob.f_star is None
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.standard_normal(prob.d)
        v = rng.standard_normal(prob.d)
        v /= np.linalg.norm(v)
        h = 1e-6
        curvature = np.linalg.norm(prob.grad(x + h * v) - prob.grad(x - h * v)) / (2 * h)
        assert curvature <= prob.L * (1 + 1e-6)
    assert problem("softmax:reg=0", seed=0).mu is None
    assert np.isfinite(prob.loss(1e5 * np.ones(prob.d)))


# ---------------------------------------------------------------------- mlp
def test_mlp_start_is_glorot_and_identical_on_ranks() -> None:
    prob = problem("mlp:n=6,hidden=8,classes=3", seed=4, rank=2, size=3)
    x0 = prob.x0()
    assert prob.d == 6 * 8 + 8 + 8 * 3 + 3
    assert np.array_equal(x0, problem("mlp:n=6,hidden=8,classes=3", seed=4).x0())
    W1, b1, W2, b2 = prob._split(x0)
    assert not b1.any() and not b2.any()
    assert np.abs(W1).max() <= np.sqrt(6 / 14) and np.abs(W2).max() <= np.sqrt(6 / 11)
    assert prob.L is None and prob.mu is None and prob.x_star is None


def test_mlp_gradient_descent_decreases_the_loss() -> None:
    prob = problem("mlp:m=200,n=5,hidden=16", seed=0)
    x = prob.x0()
    f0 = prob.loss(x)
    for _ in range(200):
        x -= 0.5 * prob.grad(x)
    assert prob.loss(x) < 0.8 * f0


# ---------------------------------------------------------------------- quadratic
def test_quadratic_shares_are_heterogeneous_but_exact() -> None:
    size = 4
    shares = [problem("quadratic:d=1000,spread=2", rank=r, size=size, seed=1)
              for r in range(size)]
    whole = problem("quadratic:d=1000", seed=1)
    c = whole.x_star
    assert all(np.array_equal(p.x_star, c) for p in shares)
    at_star = np.mean([p.grad(c) for p in shares], axis=0)
    assert np.abs(at_star).max() <= 1e-14
    assert np.linalg.norm(shares[0].grad(c)) > 1.0  # the shares differ
    x = np.random.default_rng(0).standard_normal(1000)
    f = 0.5 * np.sum(whole.lam * (x - c) ** 2)
    assert sum(p.loss(x) for p in shares) == pytest.approx(f, rel=1e-12)
    assert abs(sum(p.loss(c) for p in shares)) <= 1e-12
    assert whole.L == 1.0 and whole.mu == 0.1 and whole.f_star == 0.0
    with pytest.raises(ValueError, match="no samples"):
        whole.grad(x, np.arange(3))
    with pytest.raises(ValueError, match="no samples"):
        whole.batch(3, 0, 0)


def test_quadratic_is_fast_at_a_million_coordinates() -> None:
    t = time.perf_counter()
    prob = problem("quadratic:d=1048576", rank=3, size=8, seed=0)
    out = np.empty(prob.d)
    x = prob.x0()
    for _ in range(10):
        prob.grad(x, out=out)
    assert time.perf_counter() - t < 2.0
    assert prob.centre.nbytes == 8 << 20


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize("spec,match", [
    ("lstsq:m=8,n=16", r"m >= n.*m=8, n=16"),
    ("lstsq:kappa=0.5", r"kappa=0\.5 is below"),
    ("lstsq:L=0", r"L=0\.0 must be > 0"),
    ("lstsq:foo=1", r"unknown parameter\(s\) foo; valid: matrix"),
    ("lstsq:matrix=dense", r"matrix='dense'; valid: spectrum"),
    ("lstsq:m=ten", r"m='ten' is not a valid int"),
    ("lstsq:matrix=gaussian,m=4,n=5000", r"n=5000 .*quadratic"),
    ("lstsq:data=sklearn:diabetes,kappa=3", r"kappa unused with data"),
    ("lstsq:matrix=heavy,noise=0.1", r"noise unused with matrix=heavy"),
    ("lstsq:matrix=gaussian,kappa=3,spacing=log", r"kappa, spacing unused with matrix=gaussian"),
    ("logistic:data=sklearn:breast_cancer,m=5", r"m unused with data"),
    ("logistic:reg=0", r"reg=0\.0 must be > 0"),
    ("logistic:reg=-1", r"reg=-1\.0 must be > 0"),
    ("logistic:data=sklearn:iris", r"sklearn:iris has 3 classes.*softmax"),
    ("softmax:reg=-1", r"reg=-1\.0 is below"),
    ("softmax:data=sklearn:diabetes", r"regression target"),
    ("mlp:activation=sigmoid", r"activation='sigmoid'; valid: tanh, relu"),
    ("quadratic:kappa=0.9", r"kappa=0\.9 is below"),
    ("nosuch", r"unknown problem 'nosuch'; valid: logistic, lstsq, mlp, quadratic, softmax"),
    ("lstsq:m", r"expected key=value"),
    ("lstsq:m=1,m=2", r"m given twice"),
    ("", r"non-empty"),
])
def test_bad_parameters_are_named(spec: str, match: str) -> None:
    if "sklearn" in spec:
        pytest.importorskip("sklearn", reason="scikit-learn not installed")
    with pytest.raises(ValueError, match=match):
        problem(spec)


def test_rank_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"rank 3 not in \[0, 3\)"):
        problem("lstsq", rank=3, size=3)


def test_overrides_and_listing() -> None:
    assert problem("lstsq:m=20,n=4", n=3).d == 3
    listing = problems()
    assert sorted(listing) == PROBLEMS.names() == ["logistic", "lstsq", "mlp", "quadratic",
                                                    "softmax"]
    assert listing["lstsq"]["params"]["matrix"]["choices"] == ["spectrum", "gaussian", "heavy"]
    assert listing["quadratic"]["params"]["d"]["default"] == 65536
    assert all(info["summary"] for info in listing.values())
    assert problem("lstsq:m=20,n=4").describe()["kappa"] == pytest.approx(10)
