#!/usr/bin/env bash
# Run an hpcq job on this workstation: mpiexec -n ${NP:-2} hpcq run "$@".
#
#   NP=4 jobs/local.sh jobs/default.toml -o results.h5
#
# Each rank gets NUMBA_NUM_THREADS = cores / ranks (at least 1), so ranks x threads
# never oversubscribe the cores being measured (hpcq records the value per rank).
# Kernels are compiled once, serially, into NUMBA_CACHE_DIR before the ranks start.
# Set NUMBA_NUM_THREADS, NUMBA_CACHE_DIR or MPIEXEC to override.
set -euo pipefail

np=${NP:-2}
cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
threads=$((cores / np))
if ((threads < 1)); then threads=1; fi
export NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-$threads}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hpcq/numba}

echo "hpcq: $np ranks x $NUMBA_NUM_THREADS numba threads on $cores cores;" \
    "numba cache $NUMBA_CACHE_DIR" >&2
hpcq warmup
exec "${MPIEXEC:-mpiexec}" -n "$np" hpcq run "$@"
