#!/usr/bin/env bash
# GPU check (precision and speed on a GPU), from the repository root on a fresh GPU machine:
#   bash scripts/gpu_check.sh            (results under $OUT, default ./gpu_check_out)
#
# 1. bfloat16 and float16 log-scores and loss of the stable-size model (66.7M, B 4 x L 512)
#    on the GPU against float32 on the CPU, same weights, same inputs;
# 2. bench_train.py at the stable and dual sizes in bfloat16 (JAX jit / pmap / shard_map
#    and the torch twin on CUDA; the attention as layers.attention, its autodiff definition
#    and cuDNN flash attention), against the same run's bf16 matmul peak;
# 3. bench_sample.py at the stable size in bfloat16 (128 steps, Euler and analytic).
# Prints the card's name with every table. Needs jax with a CUDA plugin, flax, optax,
# torch (the H200 image here has them); the pure-Python packages it may lack travel as
# wheels in .whl/ (e.g. `pip download --no-deps -d .whl ml_collections`), installed below.
set -euo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"

python3 - <<'EOF' 2>&1 | tee "$OUT/precision.txt"
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, "scripts")
from bench_train import PROTEIN_V, build  # noqa: E402
from sedd_jax.diffusion.graphs import Absorbing  # noqa: E402
from sedd_jax.diffusion.noise import LogLinearNoise  # noqa: E402
from sedd_jax.models.sedd import build_model  # noqa: E402
from sedd_jax.training.tasks import single_track_objective  # noqa: E402

gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
print(f"card: {gpu.device_kind}")
_, _, config, _, params, host, _ = build("stable")
params = jax.device_get(params)
x, valid = host["tokens"].copy(), host["valid"].copy()
x[:, ::3] = PROTEIN_V - 1  # a third masked
valid[1, 300:] = False  # one padded row
sigma = np.array([0.05, 0.5, 2.0, 6.0], np.float32)
batch = {"tokens": x, "valid": valid, "example_id": np.arange(4, dtype=np.int32)}


def outputs(dtype, device):
    config.model.dtype = dtype
    model = build_model(config.model, PROTEIN_V, True)
    objective, _ = single_track_objective(model, Absorbing(PROTEIN_V - 1), LogLinearNoise(), 1e-3)
    keys = jax.random.split(jax.random.key(1), 4)

    def run(p, b):
        scores = model.apply({"params": p}, b["tokens"], jnp.asarray(sigma), b["valid"])
        loss_sum, count, _ = objective(p, b, keys, 0, jax.random.key(2))
        return scores, loss_sum / count

    with jax.default_device(device):
        scores, loss = jax.jit(run)(jax.device_put(params, device), jax.device_put(batch, device))
        return np.asarray(scores, np.float64), float(loss)


ref_scores, ref_loss = outputs("float32", cpu)
ok = True
for dtype, tol in (("bfloat16", 5e-2), ("float16", 1e-2)):
    scores, loss = outputs(dtype, gpu)
    finite = np.isfinite(scores[valid]).all()
    err = np.abs(scores - ref_scores)[valid].max() / (1 + np.abs(ref_scores[valid]).max())
    rel = abs(loss - ref_loss) / abs(ref_loss)
    good = finite and err < tol and rel < tol
    ok &= good
    print(
        f"{dtype:9} vs CPU float32: log-score max|d|/(1+max) {err:.2e}, loss {loss:.6f} vs "
        f"{ref_loss:.6f} (rel {rel:.2e}), tolerance {tol:g}: {'ok' if good else 'FAIL'}"
    )
sys.exit(0 if ok else 1)
EOF

python3 scripts/bench_train.py --sizes stable,dual --dtype bfloat16 --torch-device cuda \
  --attention current,softmax,cudnn --repeats 10 --pause 0.2 \
  --out "$OUT/bench_train_gpu.json" 2>&1 | tee "$OUT/bench_train.txt"
python3 scripts/bench_sample.py --size stable --dtype bfloat16 --torch-device cuda \
  --steps 128 --batch 16 --length 512 --lengths 512,1024 --batches 64 --repeats 5 \
  --pause 0.2 --out "$OUT/bench_sample_gpu.json" 2>&1 | tee "$OUT/bench_sample.txt"
