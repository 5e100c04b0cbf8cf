"""The paper figures (analysis/scripts/paper_*.py) and their helpers, on synthetic result files."""

from __future__ import annotations

import math
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpcq.analysis import training
from hpcq.store import CaseRecord, ResultFile

pytest.importorskip("matplotlib", reason="figures need the plot extra")

SCRIPTS = Path(__file__).resolve().parent.parent / "analysis" / "scripts"
PROV = {"software": "hpcq", "softwareVersion": "0.0.test",
        "start_time": "2025-01-01T00:00:00+00:00", "nprocs": 2, "hostnames": ["a", "a"],
        "mpi_library": "MPICH", "cpu_model": "Test CPU"}
DQ_TAIL = "range=predetermined,D=0.0,momentum=-1.0"


def _script(name: str) -> dict[str, Any]:
    return runpy.run_path(str(SCRIPTS / f"{name}.py"))


def train_case(problem: str, method: str, compressor: str = "", *, d: int = 16, T: int = 20,
               log_every: int = 5, nprocs: int = 2, seed: int = 0, rate: float = 0.8,
               kappa: float = 10.0, f_star: float | None = 1.0, x_star: bool = True,
               payload: float | None = None, side: float = 32.0, staleness: int = 0,
               batch: int = 0, info: dict[str, Any] | None = None, diverge: bool = False,
               sender_only: bool = False) -> CaseRecord:
    """A ``train`` case shaped like hpcq.bench.train's: dist = rate^t, loss = f* + dist^2."""
    rng = np.random.default_rng(seed)
    log_iter = np.arange(0, T + 1, log_every)
    dist = rate ** log_iter.astype(np.float64)
    if diverge:
        dist[-1] = np.inf
    loss = (f_star or 0.5) + dist ** 2
    if not x_star:
        dist = np.full(dist.shape, np.nan)
    payload = 4.0 * d if payload is None else payload
    pbits = np.full((nprocs, T), payload)
    sbits = np.full((nprocs, T), side)
    if sender_only:  # DQ methods: rank 0 sends the link's message
        pbits[1:] = 0
        sbits[1:] = 0
    t_iter = rng.uniform(1e-3, 2e-3, (nprocs, T))
    data = {k: (rng.uniform(1e-5, 1e-4, (nprocs, T)), "s")
            for k in ("t_compute", "t_encode", "t_comm", "t_decode")}
    data.update({"t_iter": (t_iter, "s"), "bytes_sent": (pbits / 8 + 60, "bytes"),
                 "bytes_recv": (pbits / 8 + 60, "bytes"), "payload_bits": (pbits, "bits"),
                 "side_bits": (sbits, "bits"), "log_iter": (log_iter, "1"), "loss": (loss, "1"),
                 "dist": (dist, "1"), "grad_norm": (dist * 2, "1")})
    pinfo = {"name": problem.partition(":")[0], "spec": problem, "d": d, "m": 100,
             "L": 1.0, "mu": 1.0 / kappa, "kappa": kappa, "x_star_known": x_star}
    if f_star is not None:
        pinfo["f_star"] = f_star
    attrs: dict[str, Any] = {
        "kind": "train", "problem": problem, "method": method, "compressor": compressor,
        "scheme": "allgather", "iterations": T, "step": 0.0, "batch": batch,
        "staleness": staleness, "seed": seed, "log_every": log_every, "nprocs": nprocs,
        "step_size": 0.1, "step_rule": "2/(L+mu)", "problem_info": pinfo,
        "final_loss": float(loss[-1]), "final_dist": float(dist[-1]),
        "bits_per_iteration": float((pbits + sbits).mean()),
        "wire_bytes_per_iteration": float((pbits / 8 + 60).mean()), "ms_per_iteration": 1.5,
        "compute_ms": 0.1, "encode_ms": 0.1, "comm_ms": 0.1, "decode_ms": 0.1,
        "overhead_pct": 5.0, "info": info or {"omega": 0.5, "compressor": compressor}}
    if x_star and not diverge:
        attrs["rate"] = float((dist[-1] / dist[0]) ** (1.0 / T))
    if f_star is not None:
        attrs["final_gap"] = float(loss[-1] - f_star)
    comp = f" {compressor}" if compressor else ""
    label = f"{method}{comp}" + (f" tau={staleness}" if staleness else "")
    return CaseRecord("train", label, attrs, data, None)


def dq_info(sigma: float, rho: float, R: float, naive: bool = False) -> dict[str, Any]:
    a = rho * 2.0 ** -R
    return {"sigma": sigma, "beta": 0.0, "D": 1.0, "a": a, "rho_n": rho, "bits": R,
            "compressor": f"fixedrange:bits={R}", "threshold_bits": math.log2(rho / sigma),
            "rate_bound": sigma + 1.8 * a if naive else max(sigma, a),
            "lower_bound": max(sigma, 2.0 ** -R), "naive_bound": sigma + 1.8 * a,
            "range_mode": "predetermined", "clipped_steps": 3 if a > sigma else 0}


def dq_file(path: Path) -> Path:
    """A controlled problem (one seed) and a heavy one (3 seeds, one diverged run)."""
    cases = []
    for prob, d, kappa, seeds in (("lstsq:m=64,n=16,kappa=10", 16, 10.0, [0]),
                                  ("lstsq:matrix=heavy,m=50,n=16", 16, 1e4, [0, 1, 2])):
        sigma, rho = (kappa - 1) / (kappa + 1), math.sqrt(d)
        for seed in seeds:
            cases.append(train_case(prob, "gd", "fp32", d=d, kappa=kappa, seed=seed,
                                    rate=sigma - 0.01, payload=32.0 * d, side=0.0))
            for R in (1.0, 2.0, 4.0, 6.0):
                a = rho * 2.0 ** -R
                for method, rate in ((f"dqgd:bits={R},{DQ_TAIL}", max(sigma, a) + 0.001 * seed),
                                     (f"dqgd:bits={R},range=sent,D=0.0,momentum=-1.0",
                                      max(sigma, a) + 0.002),
                                     (f"naive-qgd:bits={R},{DQ_TAIL}", sigma + a)):
                    if method.startswith("naive") and seeds != [0]:
                        continue
                    cases.append(train_case(
                        prob, method, d=d, kappa=kappa, seed=seed, rate=rate,
                        payload=R * d, side=32.0 if "sent" in method else 0.0, sender_only=True,
                        info=dq_info(sigma, rho, R, method.startswith("naive")),
                        diverge=seed == 2 and R == 1.0 and method.startswith("dqgd:")
                        and "sent" not in method))
    ResultFile(path, PROV).write_cases(cases)
    return path


def _png_pdf(out: Path, name: str) -> None:
    for ext, size in (("png", 20_000), ("pdf", 5_000)):
        f = out / f"{name}.{ext}"
        assert f.exists(), f"{f} not written"
        assert f.stat().st_size > size, f"{f} is only {f.stat().st_size} bytes"


# ------------------------------------------------------------------ helpers


def test_curve_axes_are_logged_iterations_cumulative_bits_and_median_seconds(
        tmp_path: Path) -> None:
    rec = train_case("lstsq:n=8", f"dqgd:bits=3.0,{DQ_TAIL}", d=8, T=10, log_every=3,
                     payload=24.0, side=32.0, sender_only=True, f_star=2.0)
    ResultFile(tmp_path / "a.h5", PROV).write_cases([rec])
    (case,) = training.load_runs([tmp_path / "*.h5"])
    assert case["file"].endswith("a.h5")
    it, dist = training.curve(case, "iteration", "dist")
    np.testing.assert_array_equal(it, [0, 3, 6, 9])  # log_every 3 of T = 10
    np.testing.assert_allclose(dist, 0.8 ** it)
    bits, _ = training.curve(case, "bits", "dist")
    # rank 0 sends 24 + 32 bits each iteration; rank 1 nothing (must not count)
    np.testing.assert_array_equal(bits, [0, 3 * 56, 6 * 56, 9 * 56])
    secs, gap = training.curve(case, "seconds", "gap")
    med = np.median(case["t_iter"], axis=0)
    np.testing.assert_allclose(secs, [0, med[:3].sum(), med[:6].sum(), med[:9].sum()])
    np.testing.assert_allclose(gap, case["loss"] - 2.0)
    with pytest.raises(ValueError, match="x must be"):
        training.curve(case, "time", "dist")


def test_gap_needs_f_star_and_rates_fall_back_to_dist(tmp_path: Path) -> None:
    recs = [train_case("softmax:data=x", "gd", "fp32", f_star=None, x_star=False),
            train_case("lstsq:n=16", f"dqgd:bits=1.0,{DQ_TAIL}", rate=1.5, diverge=True)]
    ResultFile(tmp_path / "a.h5", PROV).write_cases(recs)
    nofs, div = training.load_runs(tmp_path / "a.h5")
    with pytest.raises(ValueError, match="no f"):
        training.curve(nofs, "iteration", "gap")
    assert training.gap_or_loss([nofs, div]) == "loss"
    assert training.empirical_rate(nofs) is None  # x* unknown
    assert "rate" not in div and training.empirical_rate(div) == math.inf
    assert training.bits_of(div) == 1.0 and training.bits_of(nofs) is None


def test_names_groups_and_styles() -> None:
    assert training.display_name({"method": "gd", "compressor": "fp32"}) == "GD (32-bit)"
    assert training.display_name({"method": "gd", "compressor": "fp32", "batch": 32}) == \
        "32-bit SGD"
    assert training.display_name(
        {"method": "gd", "compressor": "qsgd:bits=2,s=1,bucket=0,norm=l2,rounding=stochastic",
         "staleness": 4}, tau=True) == "QSGD s=1 τ=4"
    assert training.display_name({"method": f"dqgd:bits=2.5,{DQ_TAIL}", "compressor": ""}) == \
        "DQ-GD R=2.5"
    assert training.method_name("dqgd:bits=4.0,range=sent,D=0.0,momentum=-1.0", bits=False) \
        == "DQ-GD (range sent)"
    assert training.display_name(
        {"method": "ecq-sgd:alpha=0.2,beta=0.9",
         "compressor": "qsgd:bits=4,s=4,bucket=0,norm=l2,rounding=stochastic"}) == \
        "ECQ-SGD α=0.2 β=0.9 (QSGD s=4)"
    assert training.method_name("vqsgd:points=simplex,reps=16,norm=l2") == "vqSGD simplex s=16"
    assert training.compressor_name("randk:k=0,ratio=0.25,bits=0,shared=true") == "rand-k 25%"
    assert training.compressor_name("terngrad:bucket=0,clip=2.5,rounding=stochastic") == \
        "TernGrad"
    groups = training.group_by([{"a": 1, "b": 2}, {"a": 1, "b": 3}, {"a": 1, "b": 2}], ["a", "b"])
    assert {k: len(v) for k, v in groups.items()} == {(1, 2): 2, (1, 3): 1}
    st = training.styles(["zeta", "DQ-GD", "GD (32-bit)", "alpha"])
    assert st["GD (32-bit)"]["color"] == "#000000" and st["DQ-GD"]["color"] == "#0072B2"
    assert len({s["color"] for s in st.values()}) == 4  # fixed colours are not reused
    assert training.styles(["alpha", "zeta", "x"]) == training.styles(["x", "zeta", "alpha"])
    assert training.tau_style(0, [0, 1, 4]) == "-" and training.tau_style(4, [0, 4]) == ":"


def test_load_runs_reports_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    problems: list[str] = []
    assert training.load_runs([bad, tmp_path / "missing.h5"], problems=problems) == []
    assert len(problems) == 2 and "bad.h5" in problems[0]


# ------------------------------------------------------------------ scripts


def test_paper_dqgd_draws_rates_and_prints_the_table(tmp_path: Path, capsys: Any) -> None:
    f = dq_file(tmp_path / "dq.h5")
    mod = _script("paper_dqgd")
    assert mod["main"]([str(f), "-o", str(tmp_path / "fig")]) == 0
    _png_pdf(tmp_path / "fig", "paper_dqgd_rate")
    out = capsys.readouterr().out
    blocks = out.split("\n\n")
    head = next(b for b in blocks if "kappa=10 (" in b)
    lines = head.splitlines()
    cols = lines[next(i for i, ln in enumerate(lines) if ln.startswith("#") and " R " in ln + " "
                      and "lower" in ln)]
    for name in ("DQ-GD", "DQ-GD (range sent)", "naive QGD", "lower", "DQ bound",
                 "clip DQ-GD"):
        assert name in cols
    assert "# GD (32-bit): rate 0.8082" in head  # sigma - 0.01 = 9/11 - 0.01
    sigma, rho = 9 / 11, 4.0
    row = {ln.split()[0]: ln.split() for ln in lines if not ln.startswith("#")}
    assert set(row) == {"1", "2", "4", "6"}
    r4 = row["4"]  # R=4: a = 0.25 < sigma
    assert float(r4[1]) == pytest.approx(sigma, abs=1e-4)  # DQ-GD: max(sigma, a)
    assert float(r4[3]) == pytest.approx(sigma + 0.25, abs=1e-4)  # naive: sigma + a
    assert float(r4[4]) == pytest.approx(sigma, abs=1e-4)  # lower bound
    r1 = row["1"]  # R=1: a = 2 > sigma, the quantizer clipped
    assert float(r1[1]) == pytest.approx(rho / 2, abs=1e-3) and r1[-3:] == ["3", "3", "3"]
    heavy = next(b for b in blocks if "heavy" in b)
    assert "3 seeds" in heavy and "naive QGD" not in heavy
    hrow = {ln.split()[0]: ln.split() for ln in heavy.splitlines() if not ln.startswith("#")}
    assert hrow["1"][1] == "inf"  # one seed diverged: the mean is off the scale
    s_h = (1e4 - 1) / (1e4 + 1)
    assert float(hrow["4"][1]) == pytest.approx(s_h + 0.001, abs=1e-4)  # mean of +0, +.001, +.002


def test_paper_dqgd_theory_lines_are_means_over_seeds(tmp_path: Path) -> None:
    cases = training.load_runs(dq_file(tmp_path / "dq.h5"))
    mod = _script("paper_dqgd")
    ctl = [c for c in cases if "kappa=10" in c["problem"]]
    th = mod["theory"](ctl, np.array([1.0, 4.0, 8.0]))
    s = 9 / 11
    np.testing.assert_allclose(th["lower"], [s, s, s])
    np.testing.assert_allclose(th["dq"], [2.0, s, s])
    np.testing.assert_allclose(th["naive"], [s + 2, s + 0.25, s + 4 / 256])
    sw = mod["sweeps"](ctl)
    assert list(sw) == ["DQ-GD", "DQ-GD (range sent)", "naive QGD"]
    assert list(sw["DQ-GD"]) == [1.0, 2.0, 4.0, 6.0]


def test_paper_vqsgd_draws_nmse_and_training(tmp_path: Path, capsys: Any) -> None:
    d, p = 1024, 2
    recs = []
    for spec, wire, nmse, bound in (
            ("vqsgd:points=cross,reps=1,norm=l2", 66, 500.0, 511.5),
            ("vqsgd:points=cross,reps=16,norm=l2", 86, 31.0, None),
            ("vqsgd:points=simplex,reps=16,norm=l2", 86, 3e4, 3.2e4),
            ("qsgd:bits=2,s=1,bucket=0,norm=l2,rounding=stochastic", 320, 15.0, 16.0),
            ("sign:bucket=0,scale=l1", 192, 0.4, None)):
        attrs = {"scheme": "allgather", "spec": spec, "d": d, "nprocs": p, "iterations": 3,
                 "nmse": nmse, "wire_bytes_per_rank": float(wire),
                 "bits_per_coordinate": 8 * wire / d, "compressor": {"header_bytes": 60}}
        if bound is not None:
            attrs["nmse_bound"] = bound
        recs.append(CaseRecord("collectives", spec, attrs, {}, None))
    prob = "softmax:data=sklearn:digits,reg=0.0001"
    recs += [train_case(prob, "gd", "fp32", d=640, rate=0.9, payload=32 * 640, side=0),
             train_case(prob, "vqsgd:points=cross,reps=16,norm=l2", d=640, rate=0.95,
                        payload=16 * 11, side=32),
             train_case(prob, "gd", "qsgd:bits=2,s=1,bucket=0,norm=l2,rounding=stochastic",
                        d=640, rate=0.93, payload=2 * 640, side=32)]
    ResultFile(tmp_path / "v.h5", PROV).write_cases(recs)
    mod = _script("paper_vqsgd")
    assert mod["main"]([str(tmp_path / "v.h5"), "-o", str(tmp_path / "fig")]) == 0
    _png_pdf(tmp_path / "fig", "paper_vqsgd_nmse")
    _png_pdf(tmp_path / "fig", "paper_vqsgd_train")
    out = capsys.readouterr().out
    cross16 = next(ln for ln in out.splitlines() if "vqSGD cross s=16" in ln and "allgather" in ln)
    # message bits: (86 - 60) * 8 / 1024; bound without nmse_bound: (d - 1) / s / p
    assert float(cross16.split()[7]) == pytest.approx(26 * 8 / 1024, abs=1e-4)
    assert float(cross16.split()[9]) == pytest.approx(1023 / 16 / 2, rel=1e-3)
    assert "sign" in out and "-" in next(ln for ln in out.splitlines() if ln.startswith("  sign"))
    trained = out[out.index("# softmax"):].splitlines()
    vq = next(ln for ln in trained if ln.startswith("  vqSGD cross s=16 "))
    assert float(vq.split()[-2]) == pytest.approx(16 * 11 + 32)  # bits per iteration
    rows = mod["nmse_rows"](training.load_runs(tmp_path / "v.h5", kind="collectives"))
    simplex = next(r for r in rows if "simplex" in r["spec"])
    assert simplex["bound"] == 3.2e4 and simplex["family"] == "vqSGD simplex"


def test_paper_khirirat_one_colour_per_compressor_one_style_per_tau(tmp_path: Path,
                                                                   capsys: Any) -> None:
    recs = []
    for prob, fs in (("logistic:data=sklearn:breast_cancer,reg=0.01", 0.3),
                     ("lstsq:m=512,n=64,kappa=20", None)):
        for comp, rate in (("fp32", 0.8), ("topk:k=0,ratio=0.25,bits=0", 0.9)):
            for tau in (0, 1, 4):
                recs.append(train_case(prob, "gd", comp, rate=rate + 0.02 * tau, f_star=fs,
                                       staleness=tau, d=64, T=40, log_every=2,
                                       payload=32 * 64 if comp == "fp32" else 16 * 38,
                                       side=0))
    ResultFile(tmp_path / "k.h5", PROV).write_cases(recs)
    mod = _script("paper_khirirat")
    assert mod["main"]([str(tmp_path / "k.h5"), "-o", str(tmp_path / "fig")]) == 0
    _png_pdf(tmp_path / "fig", "paper_khirirat")
    out = capsys.readouterr().out
    assert "final gap" in out and "final loss" in out  # f* known for one problem only
    row = next(ln for ln in out.splitlines() if ln.startswith("  top-k 25%") and " 4 " in ln)
    # gap = rate^(2t): reaches 1e-3 at the first logged t with 0.98^(2t) <= 1e-3 -> t = 172 > T
    assert row.split()[-1] == "never"
    row0 = next(ln for ln in out.splitlines() if ln.startswith("  GD (32-bit)") and " 0 " in ln)
    t_hit = next(t for t in range(0, 41, 2) if 0.8 ** (2 * t) <= 1e-3)
    assert float(row0.split()[-1]) == pytest.approx(t_hit * 32 * 64)


def test_paper_ecq_draws_loss_distance_and_bits(tmp_path: Path, capsys: Any) -> None:
    prob, d = "lstsq:matrix=gaussian,m=10000,n=256,scale=mean,noise=0.1", 256
    qsgd = "qsgd:bits=4,s=4,bucket=0,norm=l2,rounding=stochastic"
    recs = [train_case(prob, "gd", "fp32", d=d, batch=32, payload=32 * d, side=0, rate=0.9,
                       seed=s) for s in (0, 1)]
    recs += [train_case(prob, "gd", qsgd, d=d, batch=32, payload=4 * d, side=32, rate=0.95),
             train_case(prob, "ecq-sgd:alpha=0.2,beta=0.9", qsgd, d=d, batch=32, payload=4 * d,
                        side=32, rate=0.91),
             train_case(prob, "ef-sgd", qsgd, d=d, batch=32, payload=4 * d, side=32, rate=1.5)]
    ResultFile(tmp_path / "e.h5", PROV).write_cases(recs)
    mod = _script("paper_ecq")
    assert mod["main"]([str(tmp_path / "e.h5"), "-o", str(tmp_path / "fig")]) == 0
    _png_pdf(tmp_path / "fig", "paper_ecq_iterations")
    _png_pdf(tmp_path / "fig", "paper_ecq_bits")
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert [ln.split("  ")[1].strip() for ln in lines][:2] == ["32-bit SGD", "QSGD s=4"]
    ecq = next(ln for ln in lines if "ECQ-SGD alpha=0.2 beta=0.9 (QSGD s=4)" in ln)
    assert float(ecq.split()[-1]) == pytest.approx(32 * d / (4 * d + 32), abs=0.01)  # 7.76x
    assert float(ecq.split()[-3]) == pytest.approx(0.91 ** 20, rel=1e-3)  # final distance
    assert float(lines[0].split()[-1]) == pytest.approx(1.0)
    cases = training.load_runs(tmp_path / "e.h5")
    ef = next(c for c in cases if c["method"] == "ef-sgd")
    assert training.blew_up(ef, "dist") and not training.blew_up(cases[0], "dist")
    plt = training.pyplot()
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    groups = {training.display_name(c): [c] for c in cases[1:]}
    assert training.mark_diverged(ax, groups, "dist") == ["EF-SGD (QSGD s=4)"]
    assert ax.get_ylim()[1] == pytest.approx(10.0)  # 10 x the largest start (dist_0 = 1)
    plt.close(fig)


@pytest.mark.parametrize("name", ["paper_dqgd", "paper_vqsgd", "paper_khirirat", "paper_ecq"])
def test_scripts_without_cases_exit_2_with_one_line(name: str, tmp_path: Path,
                                                    capsys: Any) -> None:
    empty = tmp_path / "empty.h5"
    ResultFile(empty, PROV).close()
    code = _script(name)["main"]([str(empty), str(tmp_path / "missing.h5"), "-o",
                                  str(tmp_path / "fig")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty.h5" in err and "missing.h5" in err
    assert not (tmp_path / "fig").exists()


def test_paper_dqgd_needs_bits_methods(tmp_path: Path, capsys: Any) -> None:
    ResultFile(tmp_path / "g.h5", PROV).write_cases([train_case("lstsq:n=16", "gd", "fp32")])
    assert _script("paper_dqgd")["main"]([str(tmp_path / "g.h5"), "-o", str(tmp_path)]) == 2
    assert "method with bits" in capsys.readouterr().err
