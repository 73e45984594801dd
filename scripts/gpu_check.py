"""The Python half of scripts/gpu_check.sh (run that; it calls these two commands).

    python scripts/gpu_check.py precision [SIZE]   half precision on the GPU vs float32 on CPU
    python scripts/gpu_check.py table OUT_DIR      one table from the stage outputs in OUT_DIR

`precision`: the stable-size model (66.7M, B 4 x L 512, one row padded after 3/5, adaLN
weights perturbed so that every block and its attention contribute) on the same weights
and inputs, float32 on the CPU (model.attention = xla) against bfloat16 and float16 on
the GPU with model.attention = xla and = cudnn (where cuDNN can run): log-scores at valid
positions (max |d| / (1 + max |ref|)), the token-mean loss (relative), the gradient of
the loss (relative L2 over all parameters); and 32-step Euler samples (B 4 x L 128, rows
of length 128, 100, 64, 128, one seed) with model.attention = auto: every valid position
unmasked and in the vocabulary, pads untouched, and the fraction of tokens equal to the
CPU's (reported; half-precision rounding flips some draws and the chains then part).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import json
import os
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import PROTEIN_V, build  # noqa: E402

from sedd_jax.diffusion.graphs import Absorbing  # noqa: E402
from sedd_jax.diffusion.noise import LogLinearNoise  # noqa: E402
from sedd_jax.models import layers  # noqa: E402
from sedd_jax.models.sedd import build_model  # noqa: E402
from sedd_jax.training import generation, throughput  # noqa: E402
from sedd_jax.training.tasks import single_track_objective  # noqa: E402

# (scores, loss, gradient) tolerances per compute dtype
TOLERANCE = {"bfloat16": (5e-2, 2e-2, 1e-1), "float16": (1e-2, 5e-3, 3e-2)}
PAD = 1


def _perturbed(params):
    """adaLN weights ~ N(0, 0.02): at init they are zero and every block is the identity."""

    def leaf(path, p):
        name = jax.tree_util.keystr(path)
        if "adaLN" not in name:
            return p
        key = jax.random.key(zlib.crc32(name.encode()))
        return p + 0.02 * jax.random.normal(key, p.shape, p.dtype)

    return jax.tree_util.tree_map_with_path(leaf, params)


def precision(size: str = "stable") -> int:
    """The checks of the module docstring at a bench_train size (`demo`: a CPU smoke run,
    where the "GPU" is the CPU too)."""
    gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
    print(f"card: {gpu.device_kind}; jax {jax.__version__}; size {size}")
    _, fields, config, _, params, host, _ = build(size)
    head_dim = fields["hidden"] // fields["n_heads"]
    rows, length = host["tokens"].shape
    params = _perturbed(jax.device_get(params))
    x, valid = host["tokens"].copy(), host["valid"].copy()
    x[:, ::3] = PROTEIN_V - 1  # a third masked
    valid[1, length * 3 // 5 :] = False  # one right-padded row
    x[~valid] = PAD
    sigma = np.resize(np.array([0.05, 0.5, 2.0, 6.0], np.float32), rows)
    batch = {"tokens": x, "valid": valid, "example_id": np.arange(rows, dtype=np.int32)}
    graph = Absorbing(PROTEIN_V - 1)

    def model_of(dtype, attention):
        config.model.update(dtype=dtype, attention=attention)
        return build_model(config.model, PROTEIN_V, True)

    def outputs(dtype, attention, device):
        model = model_of(dtype, attention)
        objective, _ = single_track_objective(model, graph, LogLinearNoise(), 1e-3)
        keys = jax.random.split(jax.random.key(1), rows)

        def loss(p, b):
            loss_sum, count, _ = objective(p, b, keys, 0, jax.random.key(2))
            return loss_sum / count

        def run(p, b):
            scores = model.apply({"params": p}, b["tokens"], jnp.asarray(sigma), b["valid"])
            value, grads = jax.value_and_grad(loss)(p, b)
            return scores, value, grads

        with jax.default_device(device):
            out = jax.jit(run)(jax.device_put(params, device), jax.device_put(batch, device))
        scores, value, grads = jax.device_get(out)
        flat = np.concatenate([np.ravel(g).astype(np.float64) for g in jax.tree.leaves(grads)])
        return np.asarray(scores, np.float64), float(value), flat

    def samples(dtype, device):
        model = model_of(dtype, "auto")
        settings = config.sampling.copy_and_resolve_references()
        settings.update(steps=32, predictor="euler")
        sampler = generation.make_sampler(model, graph, LogLinearNoise(), settings)
        x0, ok = generation.initial_tokens(np.array([128, 100, 64, 128]), 128, graph.mask_id, PAD)
        with jax.default_device(device):
            p = jax.device_put(params, device)
            tokens = generation.generate_rows(sampler, p, x0, ok, np.zeros_like(ok), seed=3)
        return tokens, ok

    ref_scores, ref_loss, ref_grad = outputs("float32", "xla", cpu)
    ref_tokens, sample_valid = samples("float32", cpu)
    good_all = True
    print(f"{'dtype':9} {'attention':9} {'scores':>9} {'loss rel':>9} {'grad rel':>9}  result")
    for dtype, (tol_s, tol_l, tol_g) in TOLERANCE.items():
        for attention in ("xla", "cudnn"):
            reason = layers.cudnn_unusable(jnp.dtype(dtype), head_dim)
            if attention == "cudnn" and reason is not None:
                print(f"{dtype:9} {attention:9} skipped: {reason}")
                continue
            scores, loss, grad = outputs(dtype, attention, gpu)
            err = np.abs(scores - ref_scores)[valid].max() / (1 + np.abs(ref_scores[valid]).max())
            rel = abs(loss - ref_loss) / abs(ref_loss)
            grad_rel = np.linalg.norm(grad - ref_grad) / np.linalg.norm(ref_grad)
            good = np.isfinite(scores[valid]).all() and err < tol_s and rel < tol_l
            good = good and grad_rel < tol_g
            good_all &= good
            print(
                f"{dtype:9} {attention:9} {err:9.2e} {rel:9.2e} {grad_rel:9.2e}  "
                f"{'ok' if good else 'FAIL'} (tolerances {tol_s:g}, {tol_l:g}, {tol_g:g})"
            )
        tokens, _ = samples(dtype, gpu)
        inside = tokens[sample_valid]
        good = (inside < graph.mask_id).all() and (inside >= 0).all()
        good = good and (tokens[~sample_valid] == PAD).all()
        good_all &= good
        agree = (tokens == ref_tokens)[sample_valid].mean()
        print(
            f"{dtype:9} samples (attention auto): all valid positions unmasked and in the "
            f"vocabulary, pads kept: {'ok' if good else 'FAIL'}; {100 * agree:.1f} % of "
            f"tokens equal to the CPU float32 chain (same seed)"
        )
    return 0 if good_all else 1


def _read(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def table(out: str) -> int:
    """bench_train / bench_sample / training-loop numbers of this card in one table."""
    card = open(os.path.join(out, "card.txt")).read().strip().splitlines()[-1]
    kind = card.split(",")[0]
    peaks = throughput.lookup_peaks(kind) or {}
    rows = []
    train = _read(os.path.join(out, "bench_train_gpu.json"))
    for r in (train or {}).get("rows", []):
        dtype = train["dtype"]
        peak = peaks.get(throughput.matmul_dtype(kind, dtype))
        rows.append(
            (
                f"bench_train {r['size']} {r['variant']}",
                r["step_s"],
                r["tokens_per_s"],
                r["gflops"] / 1e3,
                r["gflops"] / 1e3 / peak if peak else float("nan"),
                r["fraction_of_own_peak"],
            )
        )
    metrics = os.path.join(out, "train_metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            logged = [json.loads(line) for line in f if '"train/tflops_per_device"' in line]
        for r in logged[-1:]:
            rows.append(
                (
                    f"training loop, step {r['step']} (padded tokens)",
                    r["train/step_time_s"],
                    r["train/padded_tokens_per_s"],
                    r["train/tflops_per_device"],
                    r.get("train/mfu", float("nan")),
                    float("nan"),
                )
            )
    print(f"card: {card}")
    print(f"datasheet dense peaks (TFLOP/s): {peaks or 'unknown card'}")
    print(f"{'what':44} {'step s':>8} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'% matmul':>8}")
    for name, step, tokens, tflops, mfu, own in rows:
        print(
            f"{name:44} {step:8.4f} {tokens:10.0f} {tflops:8.1f} {100 * mfu:5.1f}% "
            f"{100 * own:7.0f}%"
        )
    sample = _read(os.path.join(out, "bench_sample_gpu.json"))
    for r in (sample or {}).get("throughput", []):
        print(
            f"bench_sample {r['predictor']} {r['steps']} steps, B {r['batch']} x L "
            f"{r['length']}: JAX {r['batch'] / r['jax_s']:.1f} seq/s, twin "
            f"{r['batch'] / r['torch_s']:.1f} seq/s"
        )
    print(
        "MFU: model FLOPs (training/throughput.py) / time / the datasheet dense peak of the "
        "compute dtype; % matmul: of the same run's measured 2048^2 matmul"
    )
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "precision":
        sys.exit(precision(*sys.argv[2:3]))
    if command == "table" and len(sys.argv) == 3:
        sys.exit(table(sys.argv[2]))
    sys.exit(__doc__)
