#!/bin/bash
# Train sedd under PBS (ALCF Polaris: 4 A100 per node, Cray MPICH / PALS mpiexec; or any
# PBS site with Open MPI): one process per node, all of the node's GPUs visible to it.
#
#   qsub -l select=2 -A <project> -q prod scripts/launch_pbs.sh
#   qsub -v CONFIG=configs/stable.py,WORKDIR=runs/stable,EXTRA_ARGS="--config.optim.lr=1e-4" \
#       scripts/launch_pbs.sh
#
# Why one process per node: see scripts/launch_slurm.sh (one copy of the data pipeline and
# of the compiled program per node; NCCL inside and between nodes either way). JAX's Open
# MPI auto-detection would restrict each process to GPU $OMPI_COMM_WORLD_LOCAL_RANK, so
# JAX_LOCAL_DEVICE_IDS lists all of them. PALS mpiexec is not auto-detected by JAX: the
# coordinator address, the number of processes and each rank are passed as config keys.
#
# Faults: PBS sends SIGTERM at the walltime (then SIGKILL after kill_delay) and on qdel.
# Because the kill delay is short, a timer sends SIGUSR1 to mpiexec PREEMPT_BEFORE_S
# seconds before the walltime; mpiexec forwards it to the ranks (Open MPI's mpirun does so
# by design; check that your PALS version does: a rank logs "SIGUSR1: saved step N"), every
# rank saves at the same step boundary and exits 0 (sedd_jax/training/preemption.py). With RESUBMIT=1 the
# script then submits itself again and the next job resumes from that checkpoint.
#
#PBS -N sedd
#PBS -l select=2:system=polaris
#PBS -l place=scatter
#PBS -l walltime=06:00:00
#PBS -l filesystems=home:eagle
#PBS -j oe
#PBS -r y

set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"

CONFIG=${CONFIG:-configs/stable.py}
WORKDIR=${WORKDIR:-runs/$(basename "$CONFIG" .py)}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
PORT=${PORT:-23456}
PREEMPT_BEFORE_S=${PREEMPT_BEFORE_S:-300}
RESUBMIT=${RESUBMIT:-1}
SCRIPT=${SCRIPT:-scripts/launch_pbs.sh}  # PBS runs a spooled copy: resubmit the original
EXTRA_ARGS=${EXTRA_ARGS:-}
# PALS / Cray MPICH (Polaris). Open MPI: MPIEXEC_ARGS="--map-by ppr:1:node --bind-to none"
MPIEXEC_ARGS=${MPIEXEC_ARGS:---ppn 1 --depth 64 --cpu-bind depth}

NNODES=$(sort -u "$PBS_NODEFILE" | wc -l)
COORDINATOR="$(head -n 1 "$PBS_NODEFILE"):${PORT}"
JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS_PER_NODE - 1)))
export JAX_LOCAL_DEVICE_IDS
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# Polaris' recommended NCCL settings (see ALCF's docs for the current list)
export NCCL_NET_GDR_LEVEL=${NCCL_NET_GDR_LEVEL:-PHB}
export NCCL_CROSS_NIC=${NCCL_CROSS_NIC:-1}

echo "$(date -u +%FT%TZ) job ${PBS_JOBID}: ${NNODES} nodes x ${GPUS_PER_NODE} GPUs," \
    "coordinator ${COORDINATOR}, config ${CONFIG}, workdir ${WORKDIR}"

# Each rank reads its own id from the MPI launcher's environment.
# shellcheck disable=SC2016  # expanded by the inner shell of each rank
RANK_CMD='exec python -m sedd_jax.train --config="$1" --workdir="$2" \
    --config.distributed.coordinator_address="$3" --config.distributed.num_processes="$4" \
    --config.distributed.process_id="${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-$PALS_RANKID}}" \
    "${@:5}"'

# shellcheck disable=SC2086  # MPIEXEC_ARGS and EXTRA_ARGS are word lists
mpiexec -n "$NNODES" $MPIEXEC_ARGS \
    bash -c "$RANK_CMD" rank "$CONFIG" "$WORKDIR" "$COORDINATOR" "$NNODES" $EXTRA_ARGS &
MPIEXEC_PID=$!

# SIGUSR1 to mpiexec shortly before the walltime (it forwards the signal to every rank)
WALLTIME=$(qstat -f "$PBS_JOBID" 2>/dev/null | sed -n 's/.*Resource_List.walltime = //p')
if [[ $WALLTIME =~ ^([0-9]+):([0-9]+):([0-9]+)$ ]]; then
    SECONDS_LEFT=$((10#${BASH_REMATCH[1]} * 3600 + 10#${BASH_REMATCH[2]} * 60 + 10#${BASH_REMATCH[3]}))
    (sleep $((SECONDS_LEFT - PREEMPT_BEFORE_S)) && kill -USR1 "$MPIEXEC_PID") 2>/dev/null &
    TIMER_PID=$!
fi
# qdel / walltime: forward SIGTERM to the ranks, then wait for their checkpoint
trap 'kill -TERM "$MPIEXEC_PID" 2>/dev/null' TERM

STATUS=0
wait "$MPIEXEC_PID" || STATUS=$?
if [[ $STATUS -gt 128 ]]; then  # wait was interrupted by the trapped signal
    wait "$MPIEXEC_PID" || STATUS=$?
fi
if [[ -n ${TIMER_PID:-} ]]; then
    kill "$TIMER_PID" 2>/dev/null || true
fi

if [[ $STATUS -eq 0 && $RESUBMIT -eq 1 ]] \
    && tail -n 1 "$WORKDIR/metrics.jsonl" 2>/dev/null | grep -q '"event": "preempted"'; then
    echo "preempted: resubmitting"
    # (qsub -v splits at commas: EXTRA_ARGS must not contain any)
    qsub -v "CONFIG=${CONFIG},WORKDIR=${WORKDIR},EXTRA_ARGS=${EXTRA_ARGS},RESUBMIT=${RESUBMIT}" \
        "$SCRIPT"
fi
exit "$STATUS"
