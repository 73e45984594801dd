#!/bin/bash
# Train sedd on a SLURM cluster: one process per node, all of the node's GPUs visible to it.
#
#   sbatch --nodes=2 --gpus-per-node=4 scripts/launch_slurm.sh \
#       [--config.training.batch_size=128 ...]          # extra arguments go to sedd_jax.train
#   CONFIG=configs/stable.py WORKDIR=runs/stable sbatch scripts/launch_slurm.sh
#
# Why one process per node (and not one per GPU): the step is data-parallel over a
# process's local devices, so a process per node drives all its GPUs with one copy of the
# data pipeline, of the compiled program and of the host-side state; NCCL moves gradients
# inside the node and between nodes either way. Fewer processes also mean a smaller
# collective for the preemption agreement and one log line per node. JAX's SLURM
# auto-detection assumes one process per GPU (it restricts each process to GPU
# $SLURM_LOCALID), so this script sets JAX_LOCAL_DEVICE_IDS to all of the node's GPUs.
# For one process per GPU instead: --ntasks-per-node=<GPUs> --gpus-per-task=1, and unset
# JAX_LOCAL_DEVICE_IDS.
#
# Faults: --signal=USR1@120 makes SLURM send SIGUSR1 to the training processes about 120 s
# (up to 60 s more) before the time limit; every process saves a checkpoint at the same
# step boundary and exits 0 (sedd_jax/training/preemption.py). The run then requeues itself
# (same job id, same workdir) and resumes from that checkpoint. A preemption by the
# scheduler (SIGTERM) saves the same way. See docs/scaling.md.
#
#SBATCH --job-name=sedd
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail

CONFIG=${CONFIG:-configs/stable.py}
WORKDIR=${WORKDIR:-runs/$(basename "$CONFIG" .py)}
MAX_RESTARTS=${MAX_RESTARTS:-50}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-4}

# every local GPU belongs to the one process of this node
JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS_PER_NODE - 1)))
export JAX_LOCAL_DEVICE_IDS
# site-specific NCCL settings go here, e.g. NCCL_SOCKET_IFNAME=ib0; NCCL_DEBUG=WARN to debug
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0}:" \
    "${SLURM_JOB_NUM_NODES} nodes x ${GPUS_PER_NODE} GPUs, config ${CONFIG}, workdir ${WORKDIR}"

# jax.distributed.initialize() reads SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS,
# SLURM_PROCID and SLURM_LOCALID inside each task: no address or rank to pass.
srun --kill-on-bad-exit=1 --ntasks-per-node=1 \
    python -m sedd_jax.train --config="$CONFIG" --workdir="$WORKDIR" "$@"

# The loop's last row is a "preempted" event when it stopped on a signal before the end.
if tail -n 1 "$WORKDIR/metrics.jsonl" 2>/dev/null | grep -q '"event": "preempted"'; then
    if [[ ${SLURM_RESTART_COUNT:-0} -lt $MAX_RESTARTS ]]; then
        echo "preempted: requeueing job ${SLURM_JOB_ID}"
        scontrol requeue "$SLURM_JOB_ID"
    else
        echo "preempted, but ${MAX_RESTARTS} restarts reached: not requeueing" >&2
    fi
fi
