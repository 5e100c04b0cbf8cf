#!/usr/bin/env bash
# The cluster path of README ("Using a cluster's own MPI") on system MPIs from Debian/Ubuntu:
#   bash ci/system-mpi.sh openmpi mpich   # Debian's Open MPI and MPICH (either one alone works)
# For each MPI: installs it with apt-get, makes a fresh venv .ci/venv-MPI with README's commands
# (mpi4py built from source against the MPI's mpicc), checks that `hpcq info` names the library,
# then under the MPI's own mpiexec runs the MPI tests (a subset, see below), the default job and
# one `hpcq netem` run over TCP. The mpi4py builds (one C file each, minutes) run side by side.
# Needs root and apt-get (netem also network namespaces); elsewhere it says why and skips.
# Any apt-get, pip or test failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SECONDS=0
say() { printf '== [system MPI %ss] %s\n' "$SECONDS" "$*"; }

[ $# -gt 0 ] || { echo "usage: bash ci/system-mpi.sh openmpi|mpich ..." >&2; exit 2; }
pkgs=()
for mpi in "$@"; do
    case "$mpi" in
        openmpi) pkgs+=(openmpi-bin libopenmpi-dev) ;;
        mpich) pkgs+=(mpich libmpich-dev) ;;
        *) echo "ci/system-mpi.sh: unknown MPI $mpi (openmpi or mpich)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "skipped: installing $* needs root and apt-get"
    exit 0
fi

say "apt-get install ${pkgs[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"

# Debian names each MPI's tools mpicc.MPI / mpiexec.MPI; the plain names are alternatives that
# point at whichever MPI was installed first, so we never use them.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for mpi in "$@"; do
    say "fresh venv .ci/venv-$mpi: pip install -e \".[test]\" (README's cluster section)"
    for tool in mpicc mpiexec; do
        [ -x "/usr/bin/$tool.$mpi" ] || { echo "/usr/bin/$tool.$mpi missing" >&2; exit 1; }
    done
    rm -rf ".ci/venv-$mpi"
    python3 -m venv ".ci/venv-$mpi"
    # What `module load` does on a cluster: this MPI's mpicc and mpiexec first on PATH. In the
    # venv's bin/ they are also "mpiexec beside this Python", which the tests use (conftest.py).
    ln -s "/usr/bin/mpicc.$mpi" ".ci/venv-$mpi/bin/mpicc"
    ln -s "/usr/bin/mpiexec.$mpi" ".ci/venv-$mpi/bin/mpiexec"
    # MPICH's mpiexec (Hydra) starts the hydra_pmi_proxy found beside the path it was called by
    if [ "$mpi" = mpich ]; then ln -s /usr/bin/hydra_pmi_proxy ".ci/venv-$mpi/bin/"; fi
    # one at a time: an editable install writes hpcq.egg-info in the checkout
    ".ci/venv-$mpi/bin/python" -m pip install -q -e ".[test]"
done

say "mpi4py built from source against each mpicc, side by side: env MPICC=mpicc python -m pip" \
    "install --no-binary=mpi4py --no-cache-dir --force-reinstall mpi4py"
declare -A build
for mpi in "$@"; do
    (
        # shellcheck disable=SC1090
        . ".ci/venv-$mpi/bin/activate"
        t0=$SECONDS
        env MPICC=mpicc python -m pip install --no-binary=mpi4py --no-cache-dir \
            --force-reinstall mpi4py
        echo "mpi4py for $mpi built in $((SECONDS - t0))s"
    ) >"$work/build-$mpi.log" 2>&1 &
    build[$mpi]=$!
done
for mpi in "$@"; do
    if ! wait "${build[$mpi]}"; then
        cat "$work/build-$mpi.log" >&2
        echo "building mpi4py against $mpi failed" >&2; exit 1
    fi
    tail -1 "$work/build-$mpi.log"
done

check() {  # check MPI LIBRARY: everything else, in .ci/venv-MPI (run in a subshell)
    local mpi=$1 library=$2
    # shellcheck disable=SC1090
    . ".ci/venv-$mpi/bin/activate"
    export NUMBA_CACHE_DIR=$root/.numba_cache   # the main venv's kernels: same numba and sources
    if [ "$mpi" = openmpi ]; then
        # Open MPI refuses to start as root without both; CI runs as root
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    say "$mpi: hpcq info names $library, and the libmpi loaded is the system's, not a wheel's"
    local info lib
    info=$(hpcq info)
    echo "$info"
    grep -q "^mpi4py built for MPI .*: $library" <<<"$info" \
        || { echo "hpcq info does not name $library" >&2; return 1; }
    lib=$(python -c 'from mpi4py import MPI
print(" ".join(sorted({l.split()[-1] for l in open("/proc/self/maps") if "/libmpi" in l})))')
    echo "libraries loaded: $lib"
    case "$lib" in /usr/lib/*) ;; *) echo "mpi4py loaded $lib, not the system's" >&2; return 1 ;; esac

    # The MPI tests without tests/test_paper_jobs.py and tests/test_slurm.py. The four paper jobs
    # take ~250 of the ~375 s the MPI tests need under Open MPI on 2 cores, and run the same
    # collectives (allgather, allreduce, the user-defined fp16/bf16 sum) and runner paths that
    # test_cli, test_train_runner and test_mpi_collectives run here: what they add is the
    # algorithms' numerics, which no MPI library changes. The SLURM tests launch with srun.
    # Also left out here, each for a reason of the test, not of hpcq under this MPI:
    # * tests/test_interrupt.py finds the ranks through /proc and times its signals to MPICH's
    #   launcher; under Open MPI's core binding its short runs end before the signal is sent
    #   (Ctrl-C itself is checked on every MPI by test_cli's test_ctrl_c_ends_every_rank);
    # * `hpcq netem --nodes` starts its emulated nodes through MPICH's Hydra (host file, nsenter
    #   as the launcher), and the PyPI MPICH runs it in the main test run;
    # * the two-level check at 3 ranks in one node replays MPICH's order of the bf16 sums of
    #   the node Reduce bit for bit, and another library adds in another order.
    say "$mpi: python -m pytest -m mpi (without the paper jobs, SLURM, and the MPICH-specific)"
    python -m pytest -m mpi -q --durations=5 \
        --ignore=tests/test_paper_jobs.py --ignore=tests/test_slurm.py \
        --ignore=tests/test_interrupt.py \
        --deselect tests/test_netem.py::test_emulated_nodes_are_separate_hosts \
        --deselect "tests/test_twolevel.py::test_equals_serial_reference[3-3]"

    say "$mpi: the default job, hpcq warmup && mpiexec -n 2 hpcq run"
    mkdir "$work/$mpi"
    (cd "$work/$mpi" && hpcq warmup && mpiexec -n 2 hpcq run -o default.h5)
    python - "$work/$mpi/default.h5" "$library" <<'EOF'
import sys
from hpcq.store import read_attrs
attrs = read_attrs(sys.argv[1])
assert attrs["nprocs"] == 2 and attrs["mpi_library"].startswith(sys.argv[2]), attrs["mpi_library"]
print("default.h5 records", attrs["mpi_library"].splitlines()[0])
EOF

    if ! { command -v unshare && command -v tc && command -v ip; } >/dev/null; then
        say "$mpi: netem skipped: no unshare, ip or tc (util-linux, iproute2)"
        return 0
    fi
    say "$mpi: hpcq netem --rate 1gbit -- mpiexec -n 2 hpcq bench collectives (TCP, shaped lo)"
    if ! (cd "$work/$mpi" && hpcq netem --rate 1gbit -- mpiexec -n 2 hpcq bench collectives \
            --sizes 20 --compressors sign --schemes allreduce-fp32 allgather --iterations 5 \
            --warmup 1 -o netem.h5) 2>"$work/$mpi/netem.err"; then
        cat "$work/$mpi/netem.err" >&2; return 1
    fi
    cat "$work/$mpi/netem.err" >&2
    # hpcq warns when the 4 MiB transfer at start misses the rate: MPI used shared memory
    if grep -q "warning" "$work/$mpi/netem.err"; then echo "netem: link not used" >&2; return 1; fi
    python - "$work/$mpi/netem.h5" <<'EOF'
import sys
from hpcq.store import read_attrs
attrs = read_attrs(sys.argv[1])
gbit = attrs["emulated_link_measured_gbit"]
assert attrs["emulated_link"].startswith("rate=1gbit") and abs(gbit - 1) < 0.2, gbit
print(f"netem.h5 records {attrs['emulated_link']}, measured {gbit:.3f} Gbit/s")
EOF
}

for mpi in "$@"; do
    case "$mpi" in openmpi) library="Open MPI" ;; mpich) library="MPICH" ;; esac
    t0=$SECONDS
    (set -e; check "$mpi" "$library")
    say "$mpi: passed; its checks took $((SECONDS - t0))s"
done
say "passed: $*"
