#!/usr/bin/env bash
# GPU check (precision and speed on a GPU), sized for one 10-minute lease, from the repository root on a fresh GPU machine:
#   bash scripts/gpu_check.sh            (results under $OUT, default ./gpu_check_out)
#
# 1. precision (≤ 150 s): `scripts/gpu_check.py precision`: the stable model in bfloat16
#    and float16 on the GPU against float32 on the CPU, same weights and inputs: log-scores,
#    loss, gradients (model.attention = xla and = cudnn) and 32-step samples;
# 2. bench_train (≤ 180 s): stable and dual sizes, bfloat16, jit, attention `current`
#    (model.attention = xla) and `cudnn` (cuDNN fused attention with sequence lengths),
#    and the torch twin on CUDA;
# 3. bench_sample (≤ 90 s): stable size, bfloat16, 128 Euler steps, B 16 x L 512;
# 4. 40 steps of a training run (≤ 130 s): configs/stable.py on the demo proteins in
#    bfloat16 (B 4 x L 512; stop_after_steps, so no final evaluation or sampling), whose
#    metrics.jsonl throughput rows (training/throughput.py) are set beside bench_train's;
# then one table (`gpu_check.py table`) with the card's name, TFLOP/s and MFU against the
# datasheet peak. A stage that fails or runs out of its time does not stop the next.
#
# Needs jax with a CUDA plugin, flax, optax, orbax, torch (the workplace's GPU image has
# them). Pure-Python packages it lacks travel as wheels in .whl/ (git-ignored locally via
# .git/info/exclude), prepared where pip works:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     ml_collections==1.1.0 selfies==2.2.0
# and carried with the run (`carry: [".whl"]`); they are installed below.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
status=0

timeout 150 python3 scripts/gpu_check.py precision stable 2>&1 | tee "$OUT/precision.txt" \
  || status=1

timeout 180 python3 scripts/bench_train.py --sizes stable,dual --modes jit --dtype bfloat16 \
  --torch-device cuda --attention current,cudnn --repeats 5 --pause 0.2 \
  --out "$OUT/bench_train_gpu.json" 2>&1 | tee "$OUT/bench_train.txt" || status=1

timeout 90 python3 scripts/bench_sample.py --size stable --dtype bfloat16 \
  --torch-device cuda --steps 128 --predictors euler --batch 16 --length 512 \
  --lengths 1024 --batches 64 --scale-steps 16 --repeats 3 --pause 0.2 \
  --out "$OUT/bench_sample_gpu.json" 2>&1 | tee "$OUT/bench_sample.txt" || status=1

# the run directory stays out of $OUT (at most 8 files come back); its metrics.jsonl is copied
rm -rf /tmp/gpu_check_train
timeout 130 python3 -m sedd_jax.train --config=configs/stable.py --workdir=/tmp/gpu_check_train \
  --config.data.source=demo --config.data.num_workers=0 --config.data.min_len=8 \
  --config.training.batch_size=4 --config.training.accum=1 --config.training.n_steps=1000 \
  --config.training.stop_after_steps=40 \
  --config.training.log_every=10 --config.training.eval_every=100000 \
  --config.training.checkpoint_every=100000 --config.eval.max_batches=1 \
  --config.sampling.steps=8 --config.sampling.num_samples=2 \
  --config.logging.progress_bar=False 2>&1 | tail -n 20 || status=1
cp /tmp/gpu_check_train/metrics.jsonl "$OUT/train_metrics.jsonl" || status=1

python3 scripts/gpu_check.py table "$OUT" 2>&1 | tee "$OUT/table.txt"
exit $status
