"""Training runs (``train`` cases) for the paper figures: loading, curves, names and styles.

::

    from hpcq.analysis.training import load_runs, curve, group_by, display_name

    runs = load_runs(["runs/*.h5"])
    for (problem,), cases in group_by(runs, ["problem"]).items():
        for case in cases:
            bits, dist = curve(case, x="bits", y="dist")   # cumulative bits of one rank

The datasets and attributes of a case are documented in :mod:`hpcq.bench.train`.
x axes of :func:`curve`: ``iteration`` (``log_iter``), ``bits`` (the cumulative
payload + side bits of rank 0, the sender of the DQ methods' link, after each
logged iteration), ``seconds`` (the cumulative median over ranks of
``t_iter``) and ``seconds_warm`` (the same from the end of iteration 1 on: the first
iteration of a run pays JIT compilation and cache warm-up, often many iterations'
worth; NaN at iteration 0).  y: ``dist``, ``loss``, ``gap`` (loss - f*) and ``grad_norm``.

Figures shared by the paper scripts and ``hpcq report``: :func:`rate_figure`
(the empirical linear rate of the DQ family against R, with the theory curves)
and :func:`curves_figure` (loss or f - f* and distance against iterations,
cumulative bits and wall time).  Importing this module does not import
matplotlib; :func:`pyplot` does.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpcq.analysis.figures import LINESTYLES, MARKERS, PALETTE

#: Okabe-Ito (figures.PALETTE) then four more colour-blind-safe colours (Tol's muted).
COLORS = PALETTE[:7] + ("#882255", "#44AA99", "#999933", "#888888", PALETTE[7])
#: Fixed colours of the reference methods, the same in every figure.
FIXED = {"GD (32-bit)": "#000000", "32-bit SGD": "#000000", "DQ-GD": "#0072B2",
         "DQ-GD (range sent)": "#E69F00", "naive QGD": "#D55E00", "fp32": "#000000"}
#: Line styles by staleness tau (0 solid, 1 dashed, 2 dash-dot, 4 dotted).
TAU_STYLES = {0: "-", 1: "--", 2: "-.", 4: ":"}
_MORE_STYLES = ((0, (5, 1, 1, 1)), (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2)))
X_LABELS = {"iteration": "iteration", "bits": "cumulative bits sent per rank",
            "seconds": "wall time (s, median over ranks)",
            "seconds_warm": "wall time after iteration 1 (s, median over ranks)"}
Y_LABELS = {"dist": "distance to optimum ||x - x*||", "loss": "loss f(x)",
            "gap": "suboptimality f(x) - f*", "grad_norm": "gradient norm ||grad f(x)||"}


def load_runs(paths: str | Path | Iterable[str | Path], *, kind: str = "train",
              problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The cases of ``kind`` in every file of ``paths`` (files, globs, directories), in order.

    Each case dict (:func:`hpcq.store.read_cases`) gains ``file``.  A file that cannot be
    read is one line in ``problems`` when given, else on stderr; the others still load.
    """
    from hpcq.analysis.load import expand_paths
    from hpcq.store import read_cases

    out: list[dict[str, Any]] = []
    for path in expand_paths(paths):
        try:
            if not path.is_file():
                raise OSError("no such file")
            cases = read_cases(path, kind=kind)
        except (OSError, ValueError, KeyError) as e:
            line = f"{path}: {' '.join(str(e).split())}"
            if problems is None:
                print(f"skipped: {line}", file=sys.stderr)
            else:
                problems.append(line)
            continue
        out += [dict(c, file=str(path)) for c in cases]
    return out


def no_cases(prog: str, files: Sequence[str], needed: str, problems: Sequence[str]) -> int:
    """Print the one-line error of a script that found nothing to draw; the exit code 2."""
    why = f" ({'; '.join(problems)})" if problems else ""
    print(f"{prog}: no {needed} in {', '.join(map(str, files))}{why}", file=sys.stderr)
    return 2


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:k=v,k=v"`` -> (name, {k: v}); values stay strings ("data=sklearn:x" kept)."""
    name, _, body = str(spec).partition(":")
    params: dict[str, str] = {}
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        params[k.strip()] = v.strip()
    return name.strip(), params


def _num(text: str) -> str:
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def compressor_name(spec: str) -> str:
    """A short display name of a canonical compressor spec ("" for none)."""
    if not spec:
        return ""
    name, p = parse_spec(spec)
    if name == "qsgd":
        extra = f" bucket={p['bucket']}" if p.get("bucket", "0") != "0" else ""
        norm = f" {p['norm']}" if p.get("norm", "l2") != "l2" else ""
        code = f" {p['code']}" if p.get("code", "fixed") != "fixed" else ""
        return f"QSGD s={p.get('s', '?')}{norm}{extra}{code}"
    if name in ("randk", "topk"):
        ratio = float(p.get("ratio", "0") or 0)
        size = f"{100 * ratio:g}%" if ratio > 0 else f"k={p.get('k', '?')}"
        return f"{'rand' if name == 'randk' else 'top'}-k {size}"
    if name == "vqsgd":
        norm = f" {p['norm']}" if p.get("norm", "l2") != "l2" else ""
        return f"vqSGD {p.get('points', 'cross')} s={p.get('reps', '1')}{norm}"
    if name == "fixedrange":
        return f"cube R={_num(p.get('bits', '?'))}"
    simple = {"fp32": "fp32", "sign": "sign", "terngrad": "TernGrad"}
    return simple.get(name, spec)


def method_name(spec: str, *, bits: bool = True) -> str:
    """A short display name of a canonical method spec; ``bits=False`` leaves out R."""
    name, p = parse_spec(spec)
    base = {"gd": "GD", "dqgd": "DQ-GD", "naive-qgd": "naive QGD", "dq-hb": "DQ-HB",
            "dq-nag": "DQ-NAG", "hb": "HB", "nag": "NAG", "ef-sgd": "EF-SGD",
            "ef-signsgd": "EF-signSGD"}.get(name)
    if name == "ecq-sgd":
        return f"ECQ-SGD α={_num(p.get('alpha', '?'))} β={_num(p.get('beta', '?'))}"
    if name == "vqsgd":
        return compressor_name(spec)
    if base is None:
        return spec
    if p.get("range") == "sent":
        base += " (range sent)"
    if p.get("D") not in (None, "0.0", "0"):
        base += f" D={_num(p['D'])}"
    if p.get("momentum") not in (None, "-1.0", "-1"):
        base += f" β={_num(p['momentum'])}"
    if bits and "bits" in p:
        base += f" R={_num(p['bits'])}"
    return base


def display_name(case: dict[str, Any], *, bits: bool = True, tau: bool = False,
                 with_compressor: bool = True) -> str:
    """How a run is named in legends and tables (GD over a codec is named by the codec)."""
    spec, comp = str(case.get("method", "")), str(case.get("compressor", "") or "")
    name = method_name(spec, bits=bits)
    if parse_spec(spec)[0] == "gd" and comp:
        if comp == "fp32":
            name = "32-bit SGD" if case.get("batch") else "GD (32-bit)"
        else:
            name = compressor_name(comp)
    elif comp and with_compressor:
        name += f" ({compressor_name(comp)})"
    if tau and case.get("staleness"):
        name += f" τ={case['staleness']}"
    return name


def ascii_name(text: str) -> str:
    """``text`` with the Greek letters of the display names spelled out (for text tables)."""
    return text.replace("α", "alpha").replace("β", "beta").replace("τ", "tau").replace(
        "κ", "kappa")


def bits_of(case: dict[str, Any]) -> float | None:
    """R, the bits per coordinate of a method with a ``bits`` parameter (DQ family); else None."""
    value = parse_spec(str(case.get("method", "")))[1].get("bits")
    if value is None:
        return None
    return float(case["info.bits"]) if case.get("info.bits") is not None else float(value)


def family(case: dict[str, Any]) -> str:
    """The method spec without its ``bits`` and the compressor: one curve of a sweep over R."""
    name, p = parse_spec(str(case.get("method", "")))
    rest = ",".join(f"{k}={v}" for k, v in p.items() if k != "bits")
    comp = case.get("compressor") or ""
    return f"{name}:{rest}" + (f" {comp}" if comp else "")


def group_by(cases: Iterable[dict[str, Any]], keys: Sequence[str]
             ) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Cases grouped by the values of ``keys`` (missing: None), groups in first-seen order."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for case in cases:
        out.setdefault(tuple(case.get(k) for k in keys), []).append(case)
    return out


def f_star(case: dict[str, Any]) -> float | None:
    """The problem's optimal value f* when the case records it."""
    v = case.get("problem_info.f_star")
    return float(v) if v is not None and math.isfinite(float(v)) else None


def has_dist(case: dict[str, Any]) -> bool:
    """Whether the distance to x* was recorded (x* known)."""
    d = np.asarray(case.get("dist", []), dtype=np.float64)
    return bool(d.size) and bool(np.isfinite(d[0]))


def curve(case: dict[str, Any], x: str = "iteration", y: str = "dist"
          ) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) at the case's logged iterations; see the module docstring for the axes."""
    it = np.asarray(case["log_iter"], dtype=np.int64)
    if x == "iteration":
        xs = it.astype(np.float64)
    elif x in ("bits", "seconds", "seconds_warm"):
        if x == "bits":
            per = np.asarray(case["payload_bits"], np.float64) + np.asarray(case["side_bits"],
                                                                            np.float64)
            per = per[0] if per.ndim == 2 else per
        else:
            t = np.asarray(case["t_iter"], dtype=np.float64)
            per = np.median(t, axis=0) if t.ndim == 2 else t
        total = np.concatenate(([0.0], np.cumsum(per)))
        if it.size and (it.min() < 0 or it.max() >= total.size):
            raise ValueError(f"log_iter runs to {it.max()} but the case has {per.size} "
                             f"iterations of {x}")
        xs = total[it]
        if x == "seconds_warm":
            xs = np.where(it >= 1, xs - total[min(1, total.size - 1)], np.nan)
    else:
        raise ValueError(f"x must be iteration, bits, seconds or seconds_warm; got {x!r}")
    if y == "gap":
        fs = f_star(case)
        if fs is None:
            raise ValueError(f"no f* recorded for {case.get('problem')!r}: use y='loss'")
        ys = np.asarray(case["loss"], dtype=np.float64) - fs
    elif y in ("dist", "loss", "grad_norm"):
        ys = np.asarray(case[y], dtype=np.float64)
    else:
        raise ValueError(f"y must be dist, loss, gap or grad_norm; got {y!r}")
    return xs, ys


def band(cases: Sequence[dict[str, Any]], x: str, y: str
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, median, min, max) over the curves of repeated runs (the first's x; equal lengths)."""
    curves = [curve(c, x, y) for c in cases]
    n = min(len(c[1]) for c in curves)
    ys = np.array([c[1][:n] for c in curves])
    return curves[0][0][:n], np.median(ys, axis=0), ys.min(axis=0), ys.max(axis=0)


def draw(ax: Any, cases: Sequence[dict[str, Any]], x: str, y: str, label: str | None,
         *, log_x: bool = False, log_y: bool = True, **style: Any) -> None:
    """One curve: the median of the runs ``cases`` (seeds) with a min-max band.

    Points a log axis cannot show (values <= 0, such as bits = 0 at the start) are
    left out; about ten markers are drawn along the line.
    """
    xs, mid, lo, hi = band(cases, x, y)
    keep = (np.isfinite(mid) & np.isfinite(xs) & (xs > 0 if log_x else True)
            & (mid > 0 if log_y else True))
    if not keep.any():
        return
    style.setdefault("markevery", max(1, int(keep.sum()) // 10))
    ax.plot(xs[keep], mid[keep], label=label, ms=4, lw=1.4, **style)
    if len(cases) > 1:
        lo = np.where(lo > 0, lo, mid) if log_y else lo
        ax.fill_between(xs[keep], lo[keep], hi[keep], color=style.get("color"), alpha=0.15,
                        lw=0)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")


def blew_up(case: dict[str, Any], y: str, factor: float = 1e3) -> bool:
    """Whether the run's y ends non-finite or above ``factor`` times its start (diverged)."""
    ys = curve(case, "iteration", y)[1]
    return bool(ys.size) and (not np.isfinite(ys[-1]) or ys[-1] > factor * abs(ys[0]))


def mark_diverged(ax: Any, groups: dict[str, Sequence[dict[str, Any]]], y: str,
                  label: bool = True) -> list[str]:
    """Keep diverged runs from squashing the others: cap a log y axis, name them in the panel.

    The top of the axis goes to 10 times the largest starting value when a run of
    ``groups`` (name -> runs) blew up (:func:`blew_up`); returns the names of those
    (``label=False``: not written in the panel).
    """
    bad = [name for name, runs in groups.items() if any(blew_up(c, y) for c in runs)]
    if bad:
        starts = [abs(curve(c, "iteration", y)[1][0]) for runs in groups.values() for c in runs]
        good = [v for name, runs in groups.items() if name not in bad for c in runs
                for v in curve(c, "iteration", y)[1] if np.isfinite(v) and v > 0]
        low = min(good) / 2 if good and ax.get_yscale() == "log" else None
        ax.set_ylim(bottom=low, top=10 * max(starts))
    if bad and label:
        ax.text(0.98, 0.97, "diverged (off the top):\n" + "\n".join(bad), ha="right",
                va="top", fontsize="x-small", transform=ax.transAxes,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"})
    return bad


def empirical_rate(case: dict[str, Any]) -> float | None:
    """The ``rate`` attribute; from ``dist`` when absent (inf: diverged); None without x*."""
    if case.get("rate") is not None:
        return float(case["rate"])
    if not has_dist(case) or len(case["dist"]) < 2 or not case["dist"][0] > 0:
        return None
    d = np.asarray(case["dist"], dtype=np.float64)
    steps = int(case["log_iter"][-1] - case["log_iter"][0])
    if steps <= 0:
        return None
    return float((d[-1] / d[0]) ** (1.0 / steps)) if np.isfinite(d[-1]) else math.inf


def styles(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """name -> (color, marker): :data:`FIXED` colours, then the others in sorted order."""
    names = sorted(set(names))
    free = [c for c in COLORS if c not in {FIXED[n] for n in names if n in FIXED}]
    out, i = {}, 0
    for j, n in enumerate(names):
        if n in FIXED:
            color = FIXED[n]
        else:
            color, i = free[i % len(free)], i + 1
        out[n] = {"color": color, "marker": MARKERS[j % len(MARKERS)]}
    return out


def tau_style(tau: int, taus: Sequence[int]) -> Any:
    """Line style of staleness ``tau`` (:data:`TAU_STYLES`, then others in order)."""
    if tau in TAU_STYLES:
        return TAU_STYLES[tau]
    others = sorted(t for t in set(taus) if t not in TAU_STYLES)
    return _MORE_STYLES[others.index(tau) % len(_MORE_STYLES)]


def problem_name(spec: str) -> str:
    """The problem spec without the parameters at their defaults (when the registry knows)."""
    name, p = parse_spec(spec)
    defaults: dict[str, str] = {}
    try:
        import hpcq.problems as probs

        reg = getattr(probs, "PROBLEMS", None) or getattr(probs, "REGISTRY", None)
        defaults = {q.name: str(q.default) for q in reg.get(name).params}
    except Exception:  # cosmetic only: without the registry the full spec is shown
        pass
    shown = [f"{k}={v}" for k, v in p.items() if defaults.get(k) != v]
    return f"{name}:{','.join(shown)}" if shown else name


def problem_title(cases: Sequence[dict[str, Any]], sep: str = " ") -> str:
    """"problem (d = .., κ = ..), P ranks[, S seeds]" for the cases of one problem.

    ``sep`` goes between the spec and the facts ("\\n" for two-line panel titles).
    """
    c = cases[0]
    facts = [f"d = {c.get('problem_info.d', '?')}"]
    if c.get("problem_info.kappa") is not None:
        kappas = sorted({float(k.get("problem_info.kappa", math.nan)) for k in cases})
        kap = f"{kappas[0]:.3g}" if len(kappas) == 1 else f"{kappas[0]:.3g}..{kappas[-1]:.3g}"
        facts.append(f"κ = {kap}")
    ranks = sorted({int(k.get("nprocs", 0)) for k in cases})
    seeds = len({k.get("seed") for k in cases})
    tail = f", {'/'.join(map(str, ranks))} ranks" + (f", {seeds} seeds" if seeds > 1 else "")
    return f"{problem_name(str(c.get('problem', '?')))}{sep}({', '.join(facts)}){tail}"


def gap_or_loss(cases: Iterable[dict[str, Any]]) -> str:
    """"gap" when every case records f*, else "loss"."""
    return "gap" if all(f_star(c) is not None for c in cases) else "loss"


def legend_below(fig: Any, axes: Iterable[Any], extra: dict[str, Any] | None = None,
                 ncol: int = 4) -> None:
    """One legend for the figure, below the panels: every label once (then ``extra``)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    handles.update(extra or {})
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center",
                   bbox_to_anchor=(0.5, 0.0), ncol=min(ncol, len(handles)), fontsize="small",
                   frameon=False)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: Path, name: str) -> list[Path]:
    """Write ``out/name.png`` and ``.pdf``, close the figure, print and return the paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    for p in paths:
        print(f"wrote {p}")
    return paths


def line_styles(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """:func:`styles` plus a line style per name (sorted order), so curves read in grayscale."""
    st = styles(names)
    return {n: dict(s, linestyle=LINESTYLES[i % len(LINESTYLES)])
            for i, (n, s) in enumerate(sorted(st.items()))}


# ---- the empirical rate of the DQ family against R (paper_dqgd.py, hpcq report) --------

#: Top of the rate axis: rates above (and diverged runs) sit on this edge.
YMAX = 1.2
_SIGMA_FROM = ("dqgd", "naive-qgd")  # methods whose info.sigma is plain GD's contraction


def rate_name(case: dict[str, Any]) -> str:
    """The name of a run in the rate figures: the method without R."""
    return display_name(case, bits=False)


def sweeps(cases: Sequence[dict[str, Any]]) -> dict[str, dict[float, list[float]]]:
    """Method name -> R -> rates over seeds (inf: diverged), for the methods with bits."""
    out: dict[str, dict[float, list[float]]] = {}
    for c in cases:
        r, rate = bits_of(c), empirical_rate(c)
        if r is not None and rate is not None:
            out.setdefault(rate_name(c), {}).setdefault(r, []).append(rate)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def has_sweep(cases: Sequence[dict[str, Any]], least: int = 1) -> bool:
    """Whether a method with bits has a rate at ``least`` values of R or more."""
    return any(len(v) >= least for v in sweeps(cases).values())


def references(cases: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Method name -> rates over seeds, for the methods without bits (unquantized)."""
    out: dict[str, list[float]] = {}
    for c in cases:
        rate = empirical_rate(c)
        if bits_of(c) is None and rate is not None:
            out.setdefault(rate_name(c), []).append(rate)
    return out


def constants(cases: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(sigma, rho_n) per seed: from DQ-GD / naive QGD's info, else from kappa and d."""
    per: dict[Any, tuple[float, float]] = {}
    for c in cases:
        if parse_spec(str(c.get("method", "")))[0] in _SIGMA_FROM and "info.sigma" in c:
            per[c.get("seed")] = (float(c["info.sigma"]),
                                  float(c.get("info.rho_n") or math.sqrt(c["problem_info.d"])))
    for c in cases:
        kappa = c.get("problem_info.kappa")
        if c.get("seed") not in per and kappa is not None:
            per[c.get("seed")] = ((kappa - 1) / (kappa + 1),
                                  math.sqrt(float(c.get("problem_info.d", 1))))
    if not per:
        return np.array([]), np.array([])
    sig, rho = zip(*per.values(), strict=True)
    return np.array(sig), np.array(rho)


def theory(cases: Sequence[dict[str, Any]], r: np.ndarray) -> dict[str, np.ndarray]:
    """The three theory curves at R values ``r`` (mean over seeds); {} without sigma.

    ``lower`` = max(sigma, 2^-R), ``dq`` = max(sigma, rho_n 2^-R) (the cube
    quantizer of DQ-GD), ``naive`` = sigma + rho_n 2^-R.
    """
    sig, rho = constants(cases)
    if not sig.size:
        return {}
    s, p, rr = sig[:, None], rho[:, None], np.asarray(r, dtype=np.float64)[None, :]
    return {"lower": np.maximum(s, 2.0 ** -rr).mean(0),
            "dq": np.maximum(s, p * 2.0 ** -rr).mean(0),
            "naive": (s + p * 2.0 ** -rr).mean(0)}


def rate_panel(ax: Any, cases: Sequence[dict[str, Any]], st: dict[str, dict[str, Any]],
               ymin: float = 0.0) -> None:
    """One problem's rates against R: theory curves, unquantized lines, one line per method.

    Several seeds: the mean and a min-max band; a rate above :data:`YMAX` (or
    a diverged run) sits on the top edge as an open triangle.
    """
    sw, refs = sweeps(cases), references(cases)
    rs = sorted({r for v in sw.values() for r in v})
    grid = np.linspace(min([0.0, *rs]), max([*rs, 1.0]), 400)
    th = theory(cases, grid)
    if th:
        ax.plot(grid, th["lower"], ":", color="black", lw=1.4,
                label=r"lower bound $\max(\sigma, 2^{-R})$")
        ax.plot(grid, th["dq"], "--", color="#0072B2", lw=1.2, alpha=0.7,
                label=r"cube DQ-GD $\max(\sigma, \rho_n 2^{-R})$")
        ax.plot(grid, th["naive"], "-.", color="#D55E00", lw=1.2, alpha=0.7,
                label=r"naive $\sigma + \rho_n 2^{-R}$")
        sig, rho = constants(cases)
        thr = float(np.log2(rho / sig).mean())
        if grid[0] <= thr <= grid[-1]:
            ax.axvline(thr, color="0.6", lw=0.8, ls=(0, (1, 2)),
                       label=r"threshold $\log_2(\rho_n/\sigma)$")
    for name, rates in refs.items():
        mean = min(float(np.mean(rates)), YMAX)
        ax.axhline(mean, color=st[name]["color"], lw=1.6, label=f"{name} (unquantized)")
        if len(rates) > 1:
            ax.axhspan(min(min(rates), YMAX), min(max(rates), YMAX), color=st[name]["color"],
                       alpha=0.12, lw=0)
    for name, by_r in sw.items():
        r = np.array(list(by_r))
        vals = [np.asarray(v, dtype=np.float64) for v in by_r.values()]
        mean = np.array([v.mean() for v in vals])
        s = st[name]
        ax.plot(r, np.minimum(mean, YMAX), color=s["color"], marker=s["marker"], ms=4, lw=1.5,
                label=name)
        if max(len(v) for v in vals) > 1:
            ax.fill_between(r, np.minimum([v.min() for v in vals], YMAX),
                            np.minimum([v.max() for v in vals], YMAX), color=s["color"],
                            alpha=0.18, lw=0)
        off = ~(mean <= YMAX)
        if off.any():
            ax.plot(r[off], np.full(off.sum(), YMAX), linestyle="none", marker="^", ms=7,
                    mfc="white", mec=s["color"], mew=1.4, clip_on=False, zorder=5)
    ax.set_ylim(ymin, YMAX)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("R (bits per coordinate per iteration)")
    ax.set_ylabel(r"empirical rate $(\|x_T - x^*\| / \|x_0 - x^*\|)^{1/T}$")
    ax.grid(True, alpha=0.3)
    ax.set_title(problem_title(cases, "\n"), fontsize="small")


def rate_figure(plt: Any, groups: Sequence[Sequence[dict[str, Any]]], title: str,
                ymin: float = 0.0) -> Any:
    """A panel per problem (:func:`rate_panel`, up to three a row), one legend below."""
    st = styles({rate_name(c) for g in groups for c in g if empirical_rate(c) is not None})
    n = len(groups)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.9 * nrows), squeeze=False)
    for ax, group in zip(axes.flat, groups, strict=False):
        rate_panel(ax, group, st, ymin)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    off = plt.Line2D([], [], linestyle="none", marker="^", mfc="white", mec="0.3", ms=7)
    fig.suptitle(title)
    fig.tight_layout()
    legend_below(fig, axes.flat[:n], {f"rate > {YMAX:g} or diverged (on the edge)": off})
    return fig


# ---- loss and distance against iterations, bits and time (hpcq report) -----------------

def thin(cases: Sequence[dict[str, Any]], budget: int = 10, most: int = 6
         ) -> tuple[list[dict[str, Any]], bool]:
    """The cases with each sweep over R (:func:`family`) cut to a few values of R.

    Each sweep keeps ``keep`` = budget // (number of sweeps) values (2 to ``most``)
    evenly spaced from its smallest R to its largest, so that a panel holds about
    ``budget`` curves.  Returns the cases kept and whether any sweep was cut.
    """
    values: dict[str, list[float]] = {}
    for c in cases:
        r = bits_of(c)
        if r is not None:
            values.setdefault(family(c), []).append(r)
    keep = max(2, min(most, budget // max(1, len(values))))
    chosen: dict[str, set[float]] = {}
    for fam, rs in values.items():
        rs = sorted(set(rs))
        idx = np.unique(np.round(np.linspace(0, len(rs) - 1, keep)).astype(int)) \
            if len(rs) > keep else range(len(rs))
        chosen[fam] = {rs[i] for i in idx}
    out = [c for c in cases if bits_of(c) is None or bits_of(c) in chosen[family(c)]]
    return out, len(out) < len(cases)


def curves_figure(plt: Any, cases: Sequence[dict[str, Any]], st: dict[str, dict[str, Any]]
                  ) -> Any:
    """Loss (f - f* when known) and distance to x* against iterations, bits and seconds.

    One line per method and compressor (:func:`display_name`) and staleness (the
    median over its runs with a min-max band), coloured and marked by
    ``st[name]``; its line style is ``st``'s, or the staleness's
    (:func:`tau_style`) when the problem's runs have several.  The distance row
    only when x* is known.  Time is ``seconds_warm`` (from the end of iteration 1:
    the first pays the JIT).  Runs that diverged are named in the title, off the
    top of the capped log axes.
    """
    y0 = gap_or_loss(cases)
    ys = [y0] + (["dist"] if any(has_dist(c) for c in cases) else [])
    xs = ("iteration", "bits", "seconds_warm")
    taus = sorted({int(c.get("staleness") or 0) for c in cases})
    bad: dict[str, None] = {}
    fig, axes = plt.subplots(len(ys), 3, figsize=(14, 3.6 * len(ys) + 0.8), squeeze=False)
    runs_by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in cases:
        runs_by.setdefault((display_name(c), int(c.get("staleness") or 0)), []).append(c)
    extra: dict[str, Any] = {}
    for row, y in zip(axes, ys, strict=True):
        groups = {k: [c for c in runs if y != "dist" or has_dist(c)]
                  for k, runs in sorted(runs_by.items())}
        groups = {k: runs for k, runs in groups.items() if runs}
        for ax, x in zip(row, xs, strict=True):
            for (n, tau), runs in groups.items():
                style = dict(st[n])
                if len(taus) > 1:
                    style["linestyle"] = tau_style(tau, taus)
                    extra[n] = plt.Line2D([], [], color=style["color"], marker=style["marker"])
                draw(ax, runs, x, y, None if len(taus) > 1 else n, log_x=x == "bits", **style)
            named = {n + (f" τ={t}" if len(taus) > 1 else ""): r for (n, t), r in groups.items()}
            bad.update(dict.fromkeys(mark_diverged(ax, named, y, label=False)))
            ax.set_xlabel(X_LABELS[x] + (" (log)" if x == "bits" else ""))
            ax.set_ylabel(Y_LABELS[y])
            ax.grid(True, which="both", alpha=0.25)
            if x != "bits":
                ax.locator_params(axis="x", nbins=6)
    if len(taus) > 1:
        extra.update({f"τ = {t}": plt.Line2D([], [], color="0.2", linestyle=tau_style(t, taus))
                      for t in taus})
    title = problem_title(cases)
    if bad:
        title += "\ndiverged (off the top): " + ", ".join(bad)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    legend_below(fig, axes.flat, extra, ncol=4)
    return fig
