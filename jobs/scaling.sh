#!/usr/bin/env bash
# The scaling measurement of the compressed means on one machine, in one go:
#
#   jobs/scaling.sh OUTDIR            # e.g. on a 16-core node: RANKS="2 4 8 16"
#
# For each rank count in RANKS (default: 2, 4, ..., up to the cores), one side-by-side
# `hpcq bench collectives` run on shared memory at SIZES (default 22,24) of the fp32 and
# bf16 allreduces, the one-hop, multi-hop, homomorphic and pipelined means with 4-bit QSGD
# and 1-bit sign; then, where NODES > 1 (default 4 when the cores allow 2 ranks a node),
# the flat and two-level means (both modes) on NODES emulated nodes joined at LINK
# (default 10gbit; `hpcq netem` needs root or user namespaces).  Every run writes
# OUTDIR/scaling-pN.h5 (and .txt); `hpcq report OUTDIR -o OUTDIR/report` fits the model.
# ITERATIONS (default 5) timed calls after 2 warm-up ones.  MPIEXEC overrides mpiexec.
set -euo pipefail

out=${1:?usage: jobs/scaling.sh OUTDIR}
mkdir -p "$out"
cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
if [[ -z "${RANKS:-}" ]]; then
    RANKS=""
    for ((p = 2; p <= cores; p *= 2)); do RANKS="$RANKS $p"; done
fi
sizes=${SIZES:-22,24}
iterations=${ITERATIONS:-5}
link=${LINK:-10gbit}
mpiexec=${MPIEXEC:-mpiexec}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hpcq/numba}
hpcq warmup >&2

common=(--sizes "$sizes" --iterations "$iterations" --warmup 2)
for p in $RANKS; do
    if ((p > cores)); then
        echo "hpcq: scaling: $p ranks > $cores cores: skipped (MPI busy-polls)" >&2
        continue
    fi
    echo "hpcq: scaling: $p ranks, shared memory" >&2
    "$mpiexec" -n "$p" hpcq bench collectives "${common[@]}" \
        --schemes allreduce-fp32 allreduce-bf16 allgather two-phase ring rhd \
        allreduce-int:bits=8 allreduce-int:bits=16 pipelined:chunks=16 \
        --compressors qsgd:bits=4 sign -o "$out/scaling-p$p.h5" | tee "$out/scaling-p$p.txt"
done

nodes=${NODES:-$(( cores >= 8 ? 4 : 1 ))}
if ((nodes > 1)); then
    p=$(( (cores / nodes) * nodes ))
    k=$(( p / nodes ))
    echo "hpcq: scaling: $nodes emulated nodes x $k ranks at $link" >&2
    hpcq netem --nodes "$nodes" --rate "$link" -- "$mpiexec" -n "$p" hpcq bench collectives \
        "${common[@]}" --compressors qsgd:bits=4 \
        --schemes allreduce-fp32 allreduce-bf16 allgather two-phase \
        "two-level:outer=two-phase,ranks_per_node=$k" \
        "two-level:outer=two-phase,ranks_per_node=$k,mode=shard" \
        "two-level:outer=allgather,ranks_per_node=$k,mode=shard" \
        -o "$out/scaling-nodes$nodes.h5" | tee "$out/scaling-nodes$nodes.txt"
fi
echo "hpcq: scaling: results in $out (hpcq report $out -o $out/report)" >&2
