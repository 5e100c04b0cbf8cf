#!/usr/bin/env bash
# The cluster path of README ("Using a cluster's own MPI") on a system MPI from Debian/Ubuntu:
#   bash ci/system-mpi.sh openmpi    # Debian's Open MPI  (openmpi-bin libopenmpi-dev)
#   bash ci/system-mpi.sh mpich      # Debian's MPICH     (mpich libmpich-dev)
# installs the MPI with apt-get, makes a fresh venv .ci/venv-MPI with README's commands (mpi4py
# built from source against the MPI's mpicc), checks that `hpcq info` names the library, then
# under the MPI's own mpiexec runs the MPI tests (a subset, see below), the default job, and one
# `hpcq netem` run over TCP. Needs root and apt-get (and, for netem, network namespaces);
# elsewhere it says why and skips. Any apt-get, pip or test failure fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SECONDS=0

mpi=${1:-}
case "$mpi" in
    openmpi) pkgs=(openmpi-bin libopenmpi-dev); library="Open MPI" ;;
    mpich) pkgs=(mpich libmpich-dev); library="MPICH" ;;
    *) echo "usage: bash ci/system-mpi.sh openmpi|mpich" >&2; exit 2 ;;
esac
say() { printf '== [%s %ss] %s\n' "$mpi" "$SECONDS" "$*"; }

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "skipped: installing $library needs root and apt-get"
    exit 0
fi

say "apt-get install ${pkgs[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
# Debian names each MPI's tools mpicc.MPI / mpiexec.MPI; the plain names are alternatives that
# point at whichever MPI was installed first, so we never use them.
for tool in mpicc mpiexec; do
    [ -x "/usr/bin/$tool.$mpi" ] || { echo "/usr/bin/$tool.$mpi missing after apt-get" >&2; exit 1; }
done

say "fresh venv .ci/venv-$mpi: README's cluster install, mpi4py built against mpicc.$mpi"
venv=.ci/venv-$mpi
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
# What `module load` does on a cluster: this MPI's mpicc and mpiexec first on PATH. In the venv's
# bin/ they are also "mpiexec beside this Python", which the tests use (tests/conftest.py).
ln -s "/usr/bin/mpicc.$mpi" "$venv/bin/mpicc"
ln -s "/usr/bin/mpiexec.$mpi" "$venv/bin/mpiexec"
export NUMBA_CACHE_DIR=$root/.numba_cache   # the main venv's kernels: same numba, same sources
if [ "$mpi" = openmpi ]; then
    # Open MPI refuses to start as root without both; CI runs as root
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
pip install -q -e ".[test]"
t0=$SECONDS
env MPICC=mpicc python -m pip install --no-binary=mpi4py --no-cache-dir --force-reinstall mpi4py
say "mpi4py built in $((SECONDS - t0))s"

say "hpcq info names $library and the MPI library loaded is the system's, not a wheel's"
info=$(hpcq info)
echo "$info"
grep -q "^mpi4py built for MPI .*: $library" <<<"$info" \
    || { echo "hpcq info does not name $library" >&2; exit 1; }
lib=$(python -c 'from mpi4py import MPI
print(" ".join(sorted({l.split()[-1] for l in open("/proc/self/maps") if "/libmpi" in l})))')
echo "libraries loaded: $lib"
case "$lib" in /usr/lib/*) ;; *) echo "mpi4py loaded $lib, not the system $library" >&2; exit 1 ;; esac

# The MPI tests without tests/test_paper_jobs.py and tests/test_slurm.py. The four paper jobs take
# ~250 of the ~375 s the MPI tests need under Open MPI on 2 cores, and run the same collectives
# (allgather, allreduce, the user-defined fp16/bf16 sum) and runner paths that test_cli,
# test_train_runner and test_mpi_collectives run here: what they add is the algorithms' numerics,
# which no MPI library changes. The SLURM tests need ci/slurm-local.sh's cluster, which launches
# with srun, not with this mpiexec.
say "MPI tests (python -m pytest -m mpi, without the paper jobs and SLURM)"
python -m pytest -m mpi -q --durations=5 \
    --ignore=tests/test_paper_jobs.py --ignore=tests/test_slurm.py

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say "the default job: hpcq warmup && mpiexec -n 2 hpcq run"
(cd "$work" && hpcq warmup && mpiexec -n 2 hpcq run -o default.h5)
python - "$work/default.h5" "$library" <<'EOF'
import sys
from hpcq.store import read_attrs
attrs = read_attrs(sys.argv[1])
assert attrs["nprocs"] == 2 and attrs["mpi_library"].startswith(sys.argv[2]), attrs["mpi_library"]
print("default.h5 records", attrs["mpi_library"].splitlines()[0])
EOF

if command -v unshare >/dev/null && command -v tc >/dev/null && command -v ip >/dev/null; then
    say "hpcq netem --rate 1gbit -- mpiexec -n 2 hpcq bench collectives (TCP over a shaped lo)"
    if ! (cd "$work" && hpcq netem --rate 1gbit -- mpiexec -n 2 hpcq bench collectives \
            --sizes 20 --compressors sign --schemes allreduce-fp32 allgather --iterations 5 \
            --warmup 1 -o netem.h5) 2>"$work/netem.err"; then
        cat "$work/netem.err" >&2; exit 1
    fi
    cat "$work/netem.err" >&2
    # hpcq warns when the 4 MiB transfer at start misses the rate: MPI used shared memory
    if grep -q "warning" "$work/netem.err"; then echo "netem: the link was not used" >&2; exit 1; fi
    python - "$work/netem.h5" <<'EOF'
import sys
from hpcq.store import read_attrs
attrs = read_attrs(sys.argv[1])
gbit = attrs["emulated_link_measured_gbit"]
assert attrs["emulated_link"].startswith("rate=1gbit") and abs(gbit - 1) < 0.2, gbit
print(f"netem.h5 records {attrs['emulated_link']}, measured {gbit:.3f} Gbit/s")
EOF
else
    say "netem skipped: no unshare, ip or tc (util-linux, iproute2)"
fi
deactivate
say "passed"
