"""Benchmark: train-step throughput of the JAX SEDD (each `parallel.mode`) against the torch twin.

    python scripts/bench_train.py [--sizes demo,stable,dual] [--modes jit,pmap,shard_map]
        [--attention current,dpa] [--repeats 5] [--pause 1.0] [--threads 2] [--no-torch]
        [--out bench_train.json]

One process, one batch, the same weights in both frameworks (`conversion.flax_to_torch`),
float32, dropout 0, AdamW + global-norm clip + EMA: each framework's training objective
(`training/tasks/objectives.py`, pairs with the config's task mixture) in its
`train_step`. Every variant is compiled / warmed up once, then the variants run in turn,
one step each with a `--pause` before it (so one framework's spinning threads do not tax
the next), `--repeats` rounds; the float32 matmul peak of XLA and of torch (2048^2) is
measured in the same rounds, and the table reports medians (peaks: best of the rounds).

Model FLOPs per step (forward + backward = 3 x forward, a matmul of m x k x n = 2 m k n):
`sedd_jax.training.throughput.model_flops`, the count the training loop logs as
`train/tflops_per_device`: per track of N = B L tokens and n blocks
6 (12 d^2 n + V d) N + 12 n B L^2 d; dual-track adds per paired layer two cross blocks,
6 x 4 d^2 (N_p + N_l) + 24 B L_p L_l d. The adaLN and sigma weights act once per
sequence and are not counted (the `6 x non-embedding params` rule would count them:
+16 % at the stable size, reported as `flops_6nd`).
Memory: `rss_peak_mib`, the process's resident set sampled every 5 ms during the step,
minus the resident set before it (`rss_step_mib`); `minflt`: minor page faults of the
step (fresh pages touched), from getrusage.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from bench_utils import bench_train_step

from sedd_jax import allocator, conversion
from sedd_jax.defaults import base_config, dual_base_config
from sedd_jax.diffusion import joint
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models import layers
from sedd_jax.models.dual import build_dual_model, init_dual_params
from sedd_jax.models.sedd import build_model, count_parameters
from sedd_jax.training.optim import make_optimizer
from sedd_jax.training.parallel import make_parallel
from sedd_jax.training.state import create_train_state
from sedd_jax.training.tasks import pair_track_objective, single_track_objective
from sedd_jax.training.throughput import model_flops
from sedd_torch.diffusion.graphs import Absorbing as TorchAbsorbing
from sedd_torch.diffusion.noise import LogLinearNoise as TorchLogLinear
from sedd_torch.models.dual import build_dual_model as torch_dual_model
from sedd_torch.models.sedd import build_model as torch_model
from sedd_torch.training import optim as torch_optim
from sedd_torch.training.state import create_train_state as torch_state
from sedd_torch.training.step import train_step as torch_train_step
from sedd_torch.training.tasks import pair_track_objective as torch_pair_objective
from sedd_torch.training.tasks import single_track_objective as torch_single_objective

PROTEIN_V, LIGAND_V = 37, 40  # stable: vocab_size 36 + mask; a SMILES vocabulary + mask
SIZES = {  # kind, model fields, batch, lengths
    "demo": ("single", dict(hidden=128, n_blocks=4, n_heads=4, cond_dim=64), 32, (64,)),
    # bench_objectives.py's model (BENCH_MODEL)
    "objectives": (
        "single",
        dict(hidden=64, n_blocks=4, n_heads=4, cond_dim=32, mlp_ratio=2),
        64,
        (64,),
    ),
    "stable": ("single", dict(hidden=768, n_blocks=8, n_heads=12, cond_dim=256), 4, (512,)),
    "dual": (
        "dual",
        dict(hidden=768, n_blocks_protein=8, n_blocks_ligand=8, n_heads=12, cond_dim=256),
        4,
        (512, 128),
    ),
}
EPS = 1e-3
MIB = 2**20


def dpa_attention(q, k, v, key_valid):
    """`jax.nn.dot_product_attention` (XLA implementation), the candidate `layers.attention`
    was measured against (float32 logits and softmax, pad keys masked)."""
    mask = None if key_valid is None else key_valid[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask)


ATTENTION = {  # name -> (layers.attention for the run, model.attention)
    "current": (layers.attention, "xla"),  # the custom-VJP attention
    "softmax": (layers.softmax_attention, "xla"),  # its definition, differentiated by autodiff
    "dpa": (dpa_attention, "xla"),
    # cuDNN fused attention with sequence lengths (layers.fused_attention): GPU, half precision
    "cudnn": (layers.attention, "cudnn"),
}


class RssSampler:
    """Peak resident set (MiB) of this process while the `with` block runs."""

    def __enter__(self):
        self.base = self.peak = _rss_mib()
        self.flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())
        self.minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.flt


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def xla_matmul(dtype: str, n: int = 2048):
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    return lambda: f(a).block_until_ready()


def torch_matmul(dtype: str, device: str, n: int = 2048):
    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
    a @ a

    def run():
        a @ a
        _sync(device)

    return run


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def build(size: str, seed: int = 0, dtype: str = "float32"):
    """(kind, fields, config, JAX model, params, batch (numpy), torch twin on those weights)."""
    kind, fields, batch, lengths = SIZES[size]
    config = base_config() if kind == "single" else dual_base_config()
    config.model.update(dtype=dtype, dropout=0.0, **fields)
    rng = np.random.default_rng(seed)
    if kind == "single":
        model = build_model(config.model, PROTEIN_V, True)
        twin = torch_model(config.model, PROTEIN_V, True)
        (length,) = lengths
        x = jnp.zeros((1, length), jnp.int32)
        params = jax.jit(model.init)(jax.random.key(seed), x, jnp.ones((1,)), x > -1)["params"]
        host = {"tokens": rng.integers(5, 25, (batch, length)).astype(np.int32)}
        host["valid"] = np.ones((batch, length), bool)
    else:
        max_lens = (config.data.max_protein_len, config.data.max_ligand_len)
        model = build_dual_model(config.model, PROTEIN_V, LIGAND_V, True, max_lens)
        twin = torch_dual_model(config.model, PROTEIN_V, LIGAND_V, True, max_lens)
        params = init_dual_params(model, jax.random.key(seed))
        lp, ll = lengths
        host = {
            "protein": rng.integers(5, 25, (batch, lp)).astype(np.int32),
            "protein_valid": np.ones((batch, lp), bool),
            "ligand": rng.integers(1, LIGAND_V - 1, (batch, ll)).astype(np.int32),
            "ligand_valid": np.arange(ll)[None] < rng.integers(ll // 2, ll + 1, (batch, 1)),
        }
    host["example_id"] = np.arange(batch, dtype=np.int32)
    arrays = conversion.flax_to_torch(jax.device_get(params), config.model.variant)
    arrays = conversion.with_rotary_buffer(arrays, fields["hidden"] // fields["n_heads"])
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    return kind, fields, config, model, params, host, twin


def jax_step(kind, config, model, params, host, mode: str):
    """A `() -> seconds` closure running one donated step of `parallel.mode`."""
    tx = make_optimizer(config.optim, 1000)
    state = create_train_state(lambda k: params, tx, jax.random.key(0))
    if kind == "single":
        objective, metrics = single_track_objective(
            model, Absorbing(PROTEIN_V - 1), LogLinearNoise(), EPS
        )
    else:
        graphs = joint.PairGraphs(Absorbing(PROTEIN_V - 1), Absorbing(LIGAND_V - 1))
        mixture = joint.TaskMixture.parse(dict(config.task))
        objective, metrics = pair_track_objective(model, graphs, LogLinearNoise(), mixture, EPS)
    step_fn = bench_train_step(objective, metrics, tx, config.optim)
    config.parallel.mode = mode
    wrapper = make_parallel(config.parallel, step_fn, 1, state)
    batch = wrapper.shard_batch(host)
    holder = [wrapper.put_state(jax.tree_util.tree_map(jnp.copy, state))]  # donated

    def run():
        holder[0], out = wrapper.step(holder[0], batch)
        jax.block_until_ready(out)

    run.compiled = lambda: wrapper.lower(holder[0], batch).compile()  # for profile_step.py
    return run


def torch_step(kind, config, twin, host, device: str = "cpu"):
    twin.to(device)
    tstate = torch_state(twin, lambda ps: torch_optim.make_optimizer(ps, config.optim))
    schedule = torch_optim.learning_rate_schedule(config.optim, 1000)
    tensors = {k: torch.as_tensor(v)[None] for k, v in host.items() if k != "example_id"}
    tensors = {
        k: (v.long() if v.dtype == torch.int32 else v).to(device) for k, v in tensors.items()
    }
    if kind == "single":
        objective, step_metrics = torch_single_objective(
            TorchAbsorbing(PROTEIN_V - 1), TorchLogLinear(), EPS
        )
    else:
        graphs = joint.PairGraphs(TorchAbsorbing(PROTEIN_V - 1), TorchAbsorbing(LIGAND_V - 1))
        mixture = joint.TaskMixture.parse(dict(config.task))
        objective, step_metrics = torch_pair_objective(graphs, TorchLogLinear(), mixture, EPS)

    def run():
        torch_train_step(
            tstate,
            tensors,
            objective=objective,
            step_metrics=step_metrics,
            lr_schedule=schedule,
            ema=0.999,
            grad_clip=config.optim.grad_clip,
            seed=0,
        )
        _sync(device)

    return run


def timed(fn) -> tuple[float, RssSampler]:
    with RssSampler() as rss:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds, rss


def bench_size(size, args, variants_of) -> list[dict]:
    kind, fields, config, model, params, host, twin = build(size, dtype=args.dtype)
    runs, compile_s = {}, {}
    for name, make in variants_of(kind, config, model, params, host, twin).items():
        runs[name], compile_s[name] = make()  # compiled / warmed up by one step
    peaks = {"xla": xla_matmul(args.dtype)}
    if not args.no_torch:
        peaks["torch"] = torch_matmul(args.dtype, args.torch_device)
    samples = {name: [] for name in runs}
    peak_s = {name: [] for name in peaks}
    for _ in range(args.repeats):
        for name, fn in peaks.items():
            time.sleep(args.pause)
            peak_s[name].append(min(timed(fn)[0] for _ in range(3)))
        for name, fn in runs.items():
            time.sleep(args.pause)
            samples[name].append(timed(fn))
    peak = {name: 2 * 2048**3 / min(s) / 1e9 for name, s in peak_s.items()}
    peak.setdefault("torch", float("nan"))
    flops = model_flops(fields, SIZES[size][2], SIZES[size][3], (PROTEIN_V, LIGAND_V))
    tokens = SIZES[size][2] * sum(SIZES[size][3])
    non_embedding = count_parameters(params) - sum(
        v.size for k, v in params.items() if "embed" in k or k == "vocab_embed"
    )
    rows = []
    for name, runs_ in samples.items():
        step = statistics.median(s for s, _ in runs_)
        gflops = flops / step / 1e9
        own_peak = peak["torch" if name == "torch" else "xla"]
        rows.append(
            {
                "size": size,
                "variant": name,
                "params": count_parameters(params),
                "batch": SIZES[size][2],
                "lengths": list(SIZES[size][3]),
                "compile_s": compile_s[name],
                "step_s": step,
                "step_s_all": [s for s, _ in runs_],
                "tokens_per_s": tokens / step,
                "model_flops": flops,
                "flops_6nd": 6 * non_embedding * tokens,
                "gflops": gflops,
                "peak_gflops_xla": peak["xla"],
                "peak_gflops_torch": peak["torch"],
                "fraction_of_own_peak": gflops / own_peak,
                "rss_step_mib": statistics.median(r.peak - r.base for _, r in runs_),
                "rss_peak_mib": max(r.peak for _, r in runs_),
                "minflt": statistics.median(r.minflt for _, r in runs_),
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="demo,stable,dual")
    parser.add_argument("--modes", default="jit,pmap,shard_map")
    parser.add_argument(
        "--attention",
        default="current",
        help="comma list of JAX attention implementations to A/B: current (layers.attention), "
        "softmax (layers.softmax_attention, autodiff), dpa (jax.nn.dot_product_attention), "
        "cudnn (model.attention='cudnn': cuDNN fused attention with sequence lengths; GPU, "
        "half precision)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--dtype", default="float32", help="model.dtype and the matmul peak's")
    parser.add_argument("--torch-device", default="cpu", help="cpu | cuda (the twin's device)")
    parser.add_argument("--out", default="bench_train.json")
    parser.add_argument(
        "--allocator",
        default="auto",
        choices=allocator.CHOICES,
        help="the C allocator of this process, as config.allocator of a training run (both "
        "frameworks run under it)",
    )
    args = parser.parse_args()
    allocator.restart_if_needed(args.allocator, "auto")
    torch.set_num_threads(args.threads)
    modes, attentions = args.modes.split(","), args.attention.split(",")

    def variants_of(kind, config, model, params, host, twin):
        """Every mode with the first attention, then `jit` with each other attention."""
        pairs = [(m, attentions[0]) for m in modes] + [("jit", a) for a in attentions[1:]]
        variants = {}
        for mode, attention in pairs:
            name = mode if len(attentions) == 1 else f"{mode}/{attention}"
            variants[name] = functools.partial(
                first_step,
                attention,
                jax_step,
                kind,
                config.copy_and_resolve_references(),
                model,
                params,
                host,
                mode,
            )
        if not args.no_torch:
            variants["torch"] = functools.partial(
                first_step, None, torch_step, kind, config, twin, host, args.torch_device
            )
        return variants

    load = os.getloadavg()
    rows = [row for size in args.sizes.split(",") for row in bench_size(size, args, variants_of)]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end; torch threads {args.threads}; "
        f"jax {jax.__version__}, torch {torch.__version__}; {jax.devices()[0].device_kind}, "
        f"{args.dtype}; C allocator {allocator.running()}"
    )
    print(
        f"{'size':7} {'variant':16} {'compile s':>9} {'step s':>8} {'tokens/s':>9} "
        f"{'GFLOP/s':>8} {'peak':>6} {'% peak':>7} {'x torch':>8} {'RSS+ MiB':>9} {'minflt':>8}"
    )
    for r in rows:
        twin = [t for t in rows if t["size"] == r["size"] and t["variant"] == "torch"]
        ratio = f"{r['step_s'] / twin[0]['step_s']:8.2f}" if twin else f"{'-':>8}"
        peak = r["peak_gflops_torch" if r["variant"] == "torch" else "peak_gflops_xla"]
        print(
            f"{r['size']:7} {r['variant']:16} {r['compile_s']:9.1f} {r['step_s']:8.3f} "
            f"{r['tokens_per_s']:9.0f} {r['gflops']:8.1f} {peak:6.0f} "
            f"{100 * r['fraction_of_own_peak']:6.0f}% {ratio} {r['rss_step_mib']:9.0f} "
            f"{r['minflt']:8.0f}"
        )
    print("x torch: JAX step time / twin step time, same run (< 1: JAX faster)")
    with open(args.out, "w") as f:
        json.dump(
            {
                "load": [load, os.getloadavg()],
                "device": jax.devices()[0].device_kind,
                "dtype": args.dtype,
                "allocator": allocator.running(),
                "rows": rows,
            },
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


def first_step(attention, make, kind, config, model, *args):
    """(run, seconds of the first call: compile + one step), the JAX step traced with
    `layers.attention` and `model.attention` of ATTENTION[attention] (None: the twin,
    nothing patched)."""
    original = layers.attention
    if attention is not None:
        layers.attention, choice = ATTENTION[attention]
        model = model.clone(attention=choice)
    try:
        run = make(kind, config, model, *args)
        seconds, _ = timed(run)
    finally:
        layers.attention = original
    return run, seconds


if __name__ == "__main__":
    main()
