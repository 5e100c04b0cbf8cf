"""The ``hpcq`` command: subcommands registered in a plain dict, rank-aware errors.

``main()`` is the only place in hpcq that touches ``MPI.COMM_WORLD``.  Any
exception ends as one line ``hpcq: error: ...`` (prefixed ``[rank R]`` under
mpiexec; the traceback only with ``--debug``) and, when more than one rank
runs, ``MPI.COMM_WORLD.Abort`` so the other ranks never hang.  Errors every
rank knows alike (:class:`hpcq.runner.JobError`, e.g. a bad job file) are
printed once and every rank exits with the same code, no abort needed.
Exit codes: 0 success, 2 bad input, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hpcq._version import __version__
from hpcq.registry import Registry

BAD_INPUT = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError)
#: Commands whose Ctrl-C / SIGTERM goes through hpcq.interrupt (MPI runs: no rank may hang).
INTERRUPTIBLE = ("run", "bench")


class Arg(NamedTuple):
    """One argparse argument: flags and keyword arguments of ``add_argument``."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any]


def arg(*flags: str, **kwargs: Any) -> Arg:
    """An :class:`Arg` (reads like ``parser.add_argument``)."""
    return Arg(flags, kwargs)


class Command(NamedTuple):
    """A subcommand: help line, how to add its arguments, what it runs."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, *args: Arg) -> Callable[[Callable[[argparse.Namespace], int]],
                                                           Callable[[argparse.Namespace], int]]:
    """Register the decorated ``fn(args) -> exit code`` as ``hpcq NAME``."""
    def configure(p: argparse.ArgumentParser) -> None:
        for a in args:
            p.add_argument(*a.flags, **a.kwargs)

    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.register(name)(Command(help, configure, fn))
        return fn

    return deco


def _params_text(info: dict[str, Any]) -> str:
    """``name=default (choice|choice); ...`` for a listing entry's parameters, or ``-``."""
    return "; ".join(
        f"{k}={v['default']}" + (f" ({'|'.join(map(str, v['choices']))})" if v.get("choices")
                                 else "")
        for k, v in info["params"].items()) or "-"


def _print_listing(listing: dict[str, dict[str, Any]], as_json: bool, footer: str) -> int:
    """``hpcq methods`` / ``hpcq problems``: JSON, or name, summary and parameters, then
    ``footer``; the exit code."""
    if as_json:
        print(json.dumps(listing, indent=2, default=str))
        return 0
    for name, info in listing.items():
        print(f"{name:<12}{info['summary']}\n{'':<12}parameters: {_params_text(info)}")
    print(footer)
    return 0


@command("compressors", "list every registered compressor",
         arg("--json", action="store_true", help="print JSON instead of a table"))
def cmd_compressors(args: argparse.Namespace) -> int:
    from hpcq.compressors import compressors

    listing = compressors()
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    print(f"{'# name':<12}{'unbiased':<10}{'bits/coord (d=2^20)':<21}parameters (default; choices)")
    for name, info in listing.items():
        params = _params_text(info)
        bits = info["bits_per_coordinate_d1M"]
        print(f"{name:<12}{'yes' if info['unbiased'] else 'no':<10}"
              f"{'variable' if bits is None else f'{bits:.3f}':<21}{params}")
    print("# prefix: hadamard[:block=N]+SPEC rotates before encoding, e.g. hadamard+qsgd:bits=2")
    return 0


@command("methods", "list every training method ([train] methods)",
         arg("--json", action="store_true", help="print JSON instead of a table"))
def cmd_methods(args: argparse.Namespace) -> int:
    from hpcq.algorithms import methods

    listing = methods()
    if not args.json:
        for info in listing.values():
            if info["takes_compressor"]:
                info["summary"] += " [over the job's compressors]"
    return _print_listing(listing, args.json, "# [over the job's compressors]: crossed with "
                          "[train] compressors; the others build their own")


@command("problems", "list every problem ([train] problems)",
         arg("--json", action="store_true", help="print JSON instead of a table"))
def cmd_problems(args: argparse.Namespace) -> int:
    from hpcq.problems import problems

    return _print_listing(problems(), args.json, "# data=sklearn:NAME (scikit-learn's bundled "
                          "datasets) or a path to a LIBSVM/svmlight text file, .npz or .h5 file")


@command("workloads", "list every model workload (gradient layouts)",
         arg("--json", action="store_true", help="print JSON instead of a table"))
def cmd_workloads(args: argparse.Namespace) -> int:
    from hpcq.workloads import workloads

    listing = workloads()
    footer = ("# also file:PATH (.npz/.h5 of named gradient arrays, docs/workloads.md); "
              "gradients: normal | laplace | student-t:df=3 | lognormal:sigma=1 | file:PATH; "
              "buckets: ddp[:first=1,cap=25] | fused:mib=64 | single")
    if args.json:
        return _print_listing(listing, True, footer)
    print(f"{'# name':<12}{'tensors':>8}{'parameters':>16}  summary")
    for name, info in listing.items():
        print(f"{name:<12}{info['tensors']:>8}{info['parameters']:>16,}  {info['summary']}")
    print(footer)
    return 0


def _configure_bench(p: argparse.ArgumentParser) -> None:
    from hpcq.bench import BENCHES

    sub = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name, bench in BENCHES.items():
        bench.add_arguments(sub.add_parser(name, help=bench.summary,
                                           description=bench.summary))


def cmd_bench(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from hpcq import interrupt
    from hpcq.bench import BENCHES
    from hpcq.config import JobError
    from hpcq.runner import run_job

    interrupt.attach(MPI.COMM_WORLD)
    job = BENCHES.get(args.bench).to_job(args)
    try:
        return run_job(MPI.COMM_WORLD, None, output=args.output, append=args.append, job=job,
                       save=bool(args.output), command_line=getattr(args, "command_line", None))
    except JobError as e:
        # the job's "SOURCE: [table] key: ..." is the command line's "--key: ..."
        text = re.sub(rf"^{re.escape(job.source)}: \[\w+\]( block \d+)? (\w+)",
                      lambda m: "--" + m.group(2).replace("_", "-"), str(e))
        raise type(e)(text) from None


COMMANDS.register("bench")(Command("run a benchmark (hpcq bench kernels -h)", _configure_bench,
                                   cmd_bench))


@command("run", "run a job file (default: the embedded default job) on all MPI ranks",
         arg("job", nargs="?", metavar="JOB.toml", help="job file (default: embedded default)"),
         arg("-o", "--output", metavar="FILE.h5", help="result file (overrides [job] output)"),
         arg("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
             help="override a job-file value, e.g. --set collectives.sizes='\"20\"' "
                  "--set job.seed=3 (repeatable; the value is read as TOML)"),
         arg("--append", action="store_true", help="add to an existing result file"),
         arg("--resume", action="store_true",
             help="skip the cases the result file (-o) already holds; run the rest"),
         arg("--allow-mixed", action="store_true",
             help="let --resume add to a file of another job file or rank count"),
         arg("--shard", metavar="K/N", help="run only cases i with i %% N == K (array tasks)"),
         arg("--dry-run", action="store_true", help="print the expanded cases and exit"))
def cmd_run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from hpcq import interrupt
    from hpcq.runner import run_job

    if args.append and args.resume:
        raise ValueError("--append and --resume together: --resume already adds to the file "
                         "(skipping the cases it holds); give one of them")
    interrupt.attach(MPI.COMM_WORLD)  # Ctrl-C on any rank reaches rank 0, which aborts all

    return run_job(MPI.COMM_WORLD, args.job, output=args.output, append=args.append,
                   resume=args.resume, dry_run=args.dry_run, overrides=args.overrides,
                   shard=args.shard, command_line=args.command_line,
                   allow_mixed=args.allow_mixed)


@command("submit", "render an sbatch script for a job file and submit it to SLURM",
         arg("job", metavar="JOB.toml", help="the job file"),
         arg("--nodes", type=int, default=1), arg("--ntasks-per-node", type=int, default=2),
         arg("--cpus-per-task", type=int, default=1),
         arg("--time", default="00:30:00", help="wall-clock limit (default 00:30:00)"),
         arg("--partition"), arg("--account"), arg("--qos"), arg("--mem"), arg("--constraint"),
         arg("--array", type=int, default=None, metavar="N",
             help="split the job's cases over N array tasks (merge them with hpcq merge)"),
         arg("--setup", action="append", default=[], metavar="COMMAND",
             help="a command run first, e.g. 'module load mpi' (repeatable; after the job "
                  "file's [job] setup)"),
         arg("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
             help="passed on to hpcq run"),
         arg("--output-dir", default=".", help="where results and logs go (default: here)"),
         arg("--dry-run", action="store_true", help="print the script; do not submit"),
         arg("--wait", action="store_true", help="wait until the job ends (sbatch --wait)"))
def cmd_submit(args: argparse.Namespace) -> int:
    from hpcq.launch import Resources, render_sbatch, submit
    from hpcq.runner import read_job

    if args.array is not None and args.array < 1:
        raise ValueError(f"--array {args.array}: give N >= 1 array tasks, or leave --array out")
    args.array = args.array or 0
    job = read_job(args.job, args.overrides)  # one-line errors naming the file, table, key
    res = Resources(args.nodes, args.ntasks_per_node, args.cpus_per_task, args.time,
                    args.partition, args.account, args.qos, args.mem, args.constraint,
                    args.array, (*job.job.setup, *args.setup))  # the job file's setup first
    script = render_sbatch(str(Path(args.job).resolve()), job.job.name, res,
                           output_dir=str(Path(args.output_dir).resolve()),
                           overrides=args.overrides)
    if args.dry_run:
        print(script, end="")
        return 0
    path = Path(args.output_dir) / f"hpcq-{job.job.name}.sbatch"
    path.write_text(script)
    job_id = submit(path, wait=args.wait)
    print(f"hpcq: submitted {path} as job {job_id}")
    return 0


@command("netem", "run a command over an emulated network link (tc tbf in a namespace)",
         arg("--rate", required=True, help="link rate in tc syntax: 1gbit, 10gbit, 100mbit"),
         arg("--burst", help="token-bucket size, e.g. 128kb (default: 4 ms of traffic)"),
         arg("--latency", default="100ms", help="longest a packet may queue (default 100ms)"),
         arg("--nodes", type=int, default=1,
             help="emulated nodes (own network namespace and host name each, joined by a "
                  "bridge through links at --rate; shared memory inside a node; MPICH)"),
         arg("--delay", help="one-way delay between nodes, e.g. 1ms (needs the netem qdisc)"),
         arg("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND",
             help="what to run, e.g. -- mpiexec -n 2 hpcq run job.toml"))
def cmd_netem(args: argparse.Namespace) -> int:
    from hpcq import netem

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    spec = netem.link(args.rate, args.burst, args.latency, args.nodes, args.delay)
    where = (f"{args.nodes} emulated nodes, MPI over TCP between them" if args.nodes > 1
             else "MPI over TCP")
    print(f"hpcq: emulated link {netem.describe(spec)} ({spec['rate_bits'] / 1e9:.3g} Gbit/s), "
          f"{where}", file=sys.stderr, flush=True)
    return netem.run(spec, command)


@command("merge", "combine result files (e.g. a job array's) into one new file",
         arg("inputs", nargs="+", metavar="FILE.h5", help="result files of this schema version"),
         arg("-o", "--output", required=True, metavar="OUT.h5", help="the new file"))
def cmd_merge(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from hpcq import provenance
    from hpcq.store import merge

    prov = provenance.collect(MPI.COMM_SELF, command_line=args.command_line)
    counts = merge(args.inputs, args.output, prov)
    print(f"hpcq: {args.output}: {counts['cases']} case(s) from {counts['inputs']} file(s), "
          f"{counts['duplicates']} duplicate(s) left out")
    return 0


@command("warmup", "compile the kernels of the given (or default) compressors into the cache",
         arg("--compressors", nargs="+", metavar="SPEC",
             help="specs (default: those of hpcq bench kernels and of the default job)"),
         arg("--sizes", default="10", help="log2 lengths the runs will use; at 18 or more "
             "the parallel kernels are compiled too when numba has > 1 thread (default 10)"))
def cmd_warmup(args: argparse.Namespace) -> int:
    import numba

    from hpcq.bench import kernels, resolve_compressors
    from hpcq.kernels._config import PARALLEL_MIN_ELEMENTS
    from hpcq.runner import read_job

    specs = args.compressors
    if specs is None:
        job = read_job(None)
        specs = [*kernels.DEFAULT_SPECS, *(job.kernels.compressors if job.kernels else ()),
                 *(s for c in job.collectives for s in c.compressors),
                 *(s for t in job.train for s in t.compressors),
                 "fixedrange:bits=2.5", "vqsgd", "sign:bucket=0"]
    comps, notes = resolve_compressors(specs, skip_unavailable=args.compressors is None)
    for note in notes:
        print(f"hpcq: note: {note}", file=sys.stderr)
    try:
        sizes = kernels.parse_sizes(args.sizes)
    except ValueError as e:
        raise ValueError(f"--sizes {e}") from None
    seconds = kernels.compile_kernels([c for _, c in comps], sizes)
    seconds += kernels.compile_sums(big=max(sizes) >= PARALLEL_MIN_ELEMENTS)
    cache = os.environ.get("NUMBA_CACHE_DIR") or "beside the installed kernels (__pycache__)"
    print(f"hpcq: {len(comps)} compressors ready in {seconds:.1f} s "
          f"({numba.get_num_threads()} numba threads; cache {cache})")
    return 0


@command("report", "write a Markdown/HTML report with tables and figures from result files",
         arg("files", nargs="+", metavar="FILES", help="result files, globs or directories"),
         arg("-o", "--output", required=True, metavar="DIR", help="report directory"),
         arg("--kind", default="all", choices=["all", "kernels", "collectives", "train"],
             help="which cases to report (default: all; collectives includes the alpha-beta "
                  "model and its projection to 1024 ranks)"),
         arg("--projection-d", type=int, default=None, metavar="D",
             help="vector length of the projection figure and table (a measured d; default: "
                  "the largest measured)"),
         arg("--no-plots", action="store_true", help="tables and text only, no figures"))
def cmd_report(args: argparse.Namespace) -> int:
    from hpcq.analysis.report import build_report

    info = build_report(args.files, args.output, kind=args.kind, plots=not args.no_plots,
                        projection_d=args.projection_d)
    for problem in info["problems"]:
        print(f"hpcq: skipped {problem}", file=sys.stderr)
    for name, why in info["skipped"]:
        print(f"hpcq: figure {name} not drawn: {why}", file=sys.stderr)
    print(f"hpcq: report in {info['markdown']} and {info['html']} "
          f"({len(info['figures'])} figures)")
    return 0


@command("verdict", "does compression pay for a model on a cluster? (iteration model with "
         "overlap, from measured result files)",
         arg("--workload", required=True, help="model workload (hpcq workloads lists them)"),
         arg("--nodes", required=True, help="node counts, e.g. 4,16,64,256"),
         arg("--ranks-per-node", type=int, default=1, help="ranks per node (default 1)"),
         arg("--link", required=True, help="link rate: 10gbit, 100mbit, 25gbit, 1.25gbps"),
         arg("--compute-ms", type=float, help="compute time of one iteration in ms"),
         arg("--flops", type=float, help="instead: the device's sustained FLOP/s (compute = "
             "forward MACs x 2 x batch x 3 / flops)"),
         arg("--batch", type=int, default=32, help="samples per rank and iteration, with "
             "--flops (default 32)"),
         arg("--optimizer-ms", type=float, default=0.0, help="optimizer step after the "
             "backward in ms (default 0)"),
         arg("--from", dest="files", nargs="+", required=True, metavar="FILES",
             help="result files, globs or directories (collectives, workload, train cases)"),
         arg("--allow-mixed", action="store_true",
             help="combine result files from different machines"),
         arg("-o", "--output", default="verdict.h5", metavar="FILE.h5",
             help="where the verdict is written (default verdict.h5; '' for none)"))
def cmd_verdict(args: argparse.Namespace) -> int:
    from hpcq.analysis.verdict import link_bits, load_inputs, parse_nodes, verdict

    # the cheap checks first, so bad input answers before any file is read
    nodes = parse_nodes(args.nodes)
    link_bits(args.link)
    if args.compute_ms is not None and not args.compute_ms > 0:
        raise ValueError(f"--compute-ms must be > 0, got {args.compute_ms}")
    if args.compute_ms is not None and args.flops is not None:
        raise ValueError("give --compute-ms or --flops, not both")
    inputs = load_inputs(args.files, allow_mixed=args.allow_mixed)
    for problem in inputs.problems:
        print(f"hpcq: skipped {problem}", file=sys.stderr)
    v = verdict(inputs, args.workload, nodes=nodes, ranks_per_node=args.ranks_per_node,
                link=args.link, compute_ms=args.compute_ms, flops=args.flops,
                batch=args.batch, optimizer_ms=args.optimizer_ms)
    print(v.text())
    if args.output:
        print(f"# written to {v.write(args.output)}")
    return 0


@command("info", "versions, MPI library, numba threads, CPU")
def cmd_info(args: argparse.Namespace) -> int:
    import numba
    from mpi4py import MPI

    from hpcq import provenance

    print(f"hpcq {__version__} ({Path(__file__).resolve().parent})")
    print(f"python {sys.version.split()[0]} ({sys.executable})")
    print("dependencies", provenance.software_dependencies().replace(";", " "))
    print(f"mpi4py built for MPI {'.'.join(map(str, MPI.Get_version()))}: "
          f"{MPI.Get_library_version().replace(chr(0), '').splitlines()[0].strip()}")
    print(f"MPI ranks in this launch: {MPI.COMM_WORLD.Get_size()}")
    layer = numba.config.THREADING_LAYER  # type: ignore[attr-defined]
    print(f"numba threads {numba.get_num_threads()} (NUMBA_NUM_THREADS="
          f"{os.environ.get('NUMBA_NUM_THREADS', 'unset')}), threading layer {layer}, "
          f"cache {os.environ.get('NUMBA_CACHE_DIR', 'default')}")
    print(f"cpu {provenance.cpu_model()}, {os.cpu_count()} logical cores")
    git = provenance.git_state()
    if git:
        print(f"git {git['git_commit']}{' (dirty)' if git['git_dirty'] else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hpcq`` with every registered command."""
    p = argparse.ArgumentParser(prog="hpcq", description="Communication-compressed distributed "
                                "optimization on real MPI ranks.")
    p.add_argument("--version", action="version", version=f"hpcq {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.configure(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return p


def _world() -> tuple[int, int, Any]:
    """(rank, size, COMM_WORLD or None) without initialising MPI if nothing did yet."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        w = mpi.COMM_WORLD
        return w.Get_rank(), w.Get_size(), w
    # not initialised (e.g. `hpcq compressors` under mpiexec): the launcher's variables
    env = os.environ
    rank = env.get("PMI_RANK") or env.get("OMPI_COMM_WORLD_RANK") or env.get("PMIX_RANK") or "0"
    size = env.get("PMI_SIZE") or env.get("OMPI_COMM_WORLD_SIZE") or "1"
    return int(rank), int(size), None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpcq`` console script; returns the exit code."""
    from hpcq import interrupt

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if next((a for a in argv if not a.startswith("-")), None) in INTERRUPTIBLE:
        interrupt.install()  # before the imports and MPI: Ctrl-C at start-up is handled too
    try:
        args = build_parser().parse_args(argv)
        args.command_line = ["hpcq", *argv]  # recorded in result files
        code = COMMANDS.get(args.command).run(args)
        interrupt.settle()
        return code
    except KeyboardInterrupt:
        # Ctrl-C reaches the ranks one by one (MPICH's mpiexec forwards it); a rank that
        # returned would wait in MPI_Finalize for one still inside a collective, forever
        rank, size, world = _world()
        if world is not None and size > 1:
            world.Abort(130)
        return 130
    except BrokenPipeError:  # `hpcq info | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # noqa: BLE001 - every error ends as one line (and an abort)
        from hpcq.runner import JobError

        rank, size, world = _world()
        code = 2 if isinstance(e, BAD_INPUT) else 1
        text = (str(e) if not isinstance(e, KeyError) else f"missing key {e}").strip()
        text = " ".join(text.splitlines())  # one line, whatever the exception says
        if debug:
            traceback.print_exc()
        if isinstance(e, JobError):  # every rank raised it: print once, exit alike
            if rank == 0:
                print(f"hpcq: error: {text}", file=sys.stderr, flush=True)
            return e.exit_code
        interrupt.settle()  # an error caused by an interrupt under way: let it end the run
        prefix = f"[rank {rank}] " if size > 1 else ""
        print(f"{prefix}hpcq: error: {text or type(e).__name__}", file=sys.stderr, flush=True)
        if world is not None and size > 1:
            interrupt.abort(world, code)  # the line above reaches the launcher first
        return code
