"""Scaffolding shared by tests/ and parity_tests/: the checkout, tiny configs, command-line
runs, free ports, launcher environments, local HTTP servers, tiny dual-track models, the
samplers and chi-square test of the i.i.d. oracle, the exact pair oracle and the JAX/torch
twin pairs of the parity suite.

Test files import from here (`from tests.helpers import ...`), never from each other.
torch and sedd_torch are imported inside the parity helpers, so this module imports
without the torch extra.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.stats

from sedd_jax.defaults import base_config, dual_base_config
from sedd_jax.diffusion.catsample import race_uniform, uniform
from sedd_jax.diffusion.graphs import Absorbing, esigm1
from sedd_jax.diffusion.joint import PairGraphs
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.sampling import pc_sample
from sedd_jax.models.dual import DualTrackSEDD
from sedd_jax.training import distributed
from sedd_jax.training.tasks import single_track_objective

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# ------------------------------------------------------------------------------ configs

_DEFAULTS = {"base": base_config, "dual": dual_base_config}

# The model and switches every tiny run starts from; a test overrides what it needs.
TINY_MODEL = {
    "model.hidden": 32,
    "model.n_heads": 2,
    "model.cond_dim": 16,
    "model.dropout": 0.0,
    "logging.progress_bar": False,
}
TINY_BLOCKS = {
    "single": {"model.n_blocks": 1},
    "pair": {"model.n_blocks_protein": 1, "model.n_blocks_ligand": 1},
}


# The protein run that learns visibly in 300 steps (test_train_e2e; its torch-backend twin
# in test_conversion): 64 wide, 2 blocks, batch 32, proteins cropped to 32.
LEARNS = {
    "data.max_len": 32,
    "model.hidden": 64,
    "model.n_blocks": 2,
    "model.n_heads": 4,
    "model.cond_dim": 32,
    "training.batch_size": 32,
    "training.n_steps": 300,
    "training.ema": 0.99,
    "training.log_every": 50,
    "training.eval_every": 10_000,
    "training.checkpoint_every": 10_000,
    "optim.lr": 2e-3,
    "optim.warmup": 30,
    "eval.time_samples": 8,
    "sampling.steps": 32,
    "sampling.num_samples": 4,
}

# The smallest demo run (16 residues, one 32-wide block, batch 8) of the resume, fault,
# twin and multi-process tests; SMALL_RUN logs every step, evaluates one batch at one time
# and samples one sequence in 2 steps. Each test adds its steps and checkpoints.
SMALL_MODEL = {
    "data.max_len": 16,
    "model.hidden": 32,
    "model.n_blocks": 1,
    "model.n_heads": 2,
    "model.cond_dim": 16,
    "training.batch_size": 8,
}
SMALL_RUN = SMALL_MODEL | {
    "training.log_every": 1,
    "eval.max_batches": 1,
    "eval.time_samples": 1,
    "sampling.steps": 2,
    "sampling.num_samples": 1,
    "logging.progress_bar": False,
}

# The demo config of the multi-process tests (`cli_overrides(MULTI_HOST)` on the command
# line). 4 of 5 steps per run: no final evaluation and sampling, which they do not need.
MULTI_HOST = SMALL_RUN | {
    "model.dropout": 0.1,
    "training.n_steps": 5,
    "optim.warmup": 1,
    "training.eval_every": 1000,
    "training.checkpoint_every": 2,
}

# Two steps of the torch twin on the demo proteins (test_checkpoint_safety,
# test_twin_standalone).
TWIN_RUN = SMALL_RUN | {
    "backend": "torch",
    "data.source": "demo",
    "training.n_steps": 2,
    "eval.batch_size": 8,
}

# The shared finished runs of conftest.py (`tiny_single_run`, `tiny_pair_run`): a few
# steps of the tiny model on the demo proteins / demo pairs, then the run's own samples.
TINY_RUN = {
    "training.batch_size": 8,
    "training.n_steps": 3,
    "training.log_every": 3,
    "training.eval_every": 10_000,
    "training.checkpoint_every": 10_000,
    "eval.time_samples": 1,
    "eval.batch_size": 8,
    "eval.max_batches": 1,
    "sampling.steps": 4,
    "sampling.num_samples": 8,
}
TINY_SINGLE_RUN = TINY_RUN | {"data.max_len": 32}
# pairs: the ligand metrics of each evaluation on as many rows as the run's own samples, so
# their ligand_given_protein sampler compiles once
TINY_PAIR_RUN = TINY_RUN | {
    "data.max_protein_len": 32,
    "data.max_ligand_len": 48,
    "eval.sample_metrics_num": TINY_RUN["sampling.num_samples"],
}


def load_config(name_or_path: str | os.PathLike) -> ml_collections.ConfigDict:
    """ "base" / "dual": the defaults; "demo": configs/demo.py; or the path of a config file."""
    if name_or_path in _DEFAULTS:
        return _DEFAULTS[name_or_path]()
    path = pathlib.Path(name_or_path)
    if path.suffix != ".py":
        path = CONFIGS / f"{name_or_path}.py"
    return _load_module(path, f"config_{path.stem}").get_config()


def load_script(name: str):
    """scripts/<name>.py as a module (its `main` not run), scripts/ on sys.path as when
    the script runs (the benchmarks import `bench_utils` beside them)."""
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.append(scripts)
    return _load_module(REPO / "scripts" / f"{name}.py", name)


def _load_module(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
    """Set dotted keys ("training.n_steps": 4) in place and return the config; a key the
    config does not have is an error, as on the command line."""
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        if name not in node:
            raise KeyError(f"unknown config key {key!r}")
        node[name] = value
    return config


def tiny_config(name_or_path: str | os.PathLike = "base", **dotted_overrides):
    """A config (see `load_config`) with the tiny model of TINY_MODEL, then the overrides:
    `tiny_config("demo", **{"training.n_steps": 4})`."""
    config = load_config(name_or_path)
    kind = "pair" if "n_blocks_protein" in config.model else "single"
    return apply_overrides(config, TINY_MODEL | TINY_BLOCKS[kind] | dotted_overrides)


def cli_overrides(overrides: Mapping[str, Any]) -> list[str]:
    """The same dotted overrides as command-line flags: ["--config.training.n_steps=4"]."""
    return [f"--config.{key}={value}" for key, value in overrides.items()]


# --------------------------------------------------------------------- command lines


def cli_env(
    env: Mapping[str, str] | None = None,
    devices: int | None = None,
    base: Mapping[str, str] | None = None,
) -> dict:
    """`base` (default os.environ, then with SEDD_ALLOCATOR=system unless set) for a
    subprocess: this checkout first on PYTHONPATH, the session's XLA cache (conftest.py;
    every compilation cached), `devices` host devices; `env` last."""
    inherited = base is None
    base = os.environ if base is None else base
    path = os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH", "")) if p)
    out = dict(base, PYTHONPATH=path)
    if inherited:  # no allocator re-exec (a second JAX import per command); tests of the
        out.setdefault("SEDD_ALLOCATOR", "system")  # allocator pass their own base
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        out["JAX_COMPILATION_CACHE_DIR"] = cache
        out["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        out["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    if devices is not None:
        kept = [f for f in base.get("XLA_FLAGS", "").split() if "device_count" not in f]
        out["XLA_FLAGS"] = " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])
    return out | dict(env or {})


def cli_command(module: str, *args) -> list[str]:
    """`python -m module args`; a script path or interpreter flags ("-c", "-i") go to
    python as they are: `cli_command("-c", code, arg)`."""
    if module.startswith("-") or module.endswith(".py"):
        return [sys.executable, module, *map(str, args)]
    return [sys.executable, "-m", module, *map(str, args)]


def run_cli(
    module: str,
    *args,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    cwd: str | os.PathLike = REPO,
    check: bool = True,
    devices: int | None = None,
    base_env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """Run `python -m module *args` (see `cli_command`) with this checkout importable
    (`cli_env`); text output captured. check: assert exit status 0, the message the
    stderr tail."""
    process = _cli_process(module, args, env, cwd, devices, base_env)
    result = subprocess.run(**process, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{module} exited {result.returncode}:\n" + tail(result)
    return result


def start_cli(
    module: str,
    *args,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike = REPO,
    devices: int | None = None,
    base_env: Mapping[str, str] | None = None,
    text: bool = True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    start_new_session: bool = False,
) -> subprocess.Popen:
    """`run_cli` without waiting: the Popen (for signals, several processes at once);
    start_new_session: its own process group (to signal it and its workers at once)."""
    process = _cli_process(module, args, env, cwd, devices, base_env)
    return subprocess.Popen(
        **process, stdout=stdout, stderr=stderr, text=text, start_new_session=start_new_session
    )


def _cli_process(module, args, env, cwd, devices, base_env) -> dict:
    """The command, folder and environment of `run_cli` / `start_cli`."""
    return dict(args=cli_command(module, *args), cwd=cwd, env=cli_env(env, devices, base_env))


def tail(result, chars: int = 3000) -> str:
    """The last `chars` characters of a finished process's stderr."""
    return (result.stderr or "")[-chars:]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------- multi-process launches

# How launchers announce several processes: SLURM, PMI (Hydra, PBS), Open MPI, MVAPICH and
# torchrun (training/distributed.py).
LAUNCH_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "PMI_RANK",
    "PMI_SIZE",
    "PBS_NODEFILE",
    "OMPI_MCA_orte_hnp_uri",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "WORLD_SIZE",
)


def launch_arguments(monkeypatch, env: Mapping[str, str], **overrides):
    """`distributed.initialize_arguments` of the default `config.distributed` (with
    `overrides`), LAUNCH_VARIABLES unset and then `env` set; jax.distributed.initialize
    raises if called."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed.jax.distributed, "initialize", _never_called)
    return distributed.initialize_arguments(apply_overrides(base_config().distributed, overrides))


def _never_called(*args, **kwargs):
    raise AssertionError("jax.distributed.initialize must not run")


# ------------------------------------------------------ HTTP servers of the downloader


@contextlib.contextmanager
def serving(server: http.server.HTTPServer):
    """Serve in a daemon thread for the with-block; yields the server, then closes it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def server_url(server: http.server.HTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def write_body(handler: http.server.BaseHTTPRequestHandler, body: bytes, cut: int | None):
    """Send the body, or (cut: n) only its first n bytes, then drop the connection."""
    if cut is None:
        handler.wfile.write(body)
        return
    handler.wfile.write(body[:cut])
    handler.wfile.flush()
    handler.connection.shutdown(2)


# ------------------------------------------------------ conversion: weights and files


def conversion_config(variant="protlig"):
    """The conversion tests' tiny model: 32 wide, 2 blocks, 4 heads."""
    overrides = {"model.n_blocks": 2, "model.n_heads": 4, "model.variant": variant}
    return tiny_config("base", **overrides, **{"training.n_steps": 10})


def random_weights(config, seed=0, step=5):
    """conversion.Weights with distinct random params and EMA (numpy draws, nothing
    compiled)."""
    from sedd_jax import conversion

    shapes = conversion.abstract_params(config)
    rng = np.random.default_rng(seed)

    def draw(leaf):
        return rng.standard_normal(leaf.shape).astype(np.float32) / 4

    params = jax.tree_util.tree_map(draw, shapes)
    ema = jax.tree_util.tree_map(draw, shapes)
    meta = {"protein_vocab_size": config.data.vocab_size, "length_distribution": [0.5, 0.5]}
    return conversion.Weights(params, ema, step, config, meta)


def reference_state_dict(d=768, n_blocks=8, heads=12, c=256, vocab=37, seed=0) -> dict:
    """A state_dict with exactly the names and shapes of the reference's
    transformer_v100.SEDD (reference-system.md §1.1.5), in its registration order."""
    import torch

    shapes = {"vocab_embed.weight": (vocab, d)}
    shapes |= {"sigma_map.mlp.0.weight": (c, 256), "sigma_map.mlp.0.bias": (c,)}
    shapes |= {"sigma_map.mlp.2.weight": (c, c), "sigma_map.mlp.2.bias": (c,)}
    shapes |= {"rotary_emb.inv_freq": (d // heads // 2,)}
    for i in range(n_blocks):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (d,),
            b + "attn_qkv.weight": (3 * d, d),
            b + "attn_out.weight": (d, d),
            b + "norm2.weight": (d,),
            b + "mlp.fc1.weight": (4 * d, d),
            b + "mlp.fc1.bias": (4 * d,),
            b + "mlp.fc2.weight": (d, 4 * d),
            b + "mlp.fc2.bias": (d,),
            b + "adaLN_modulation.weight": (6 * d, c),
            b + "adaLN_modulation.bias": (6 * d,),
        }
    shapes |= {
        "output_layer.norm.weight": (d,),
        "output_layer.linear.weight": (vocab, d),
        "output_layer.adaLN_modulation.weight": (2 * d, c),
        "output_layer.adaLN_modulation.bias": (2 * d,),
    }
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("inv_freq"):
            out[name] = 1.0 / 10000 ** (torch.arange(0, 2 * shape[0], 2).float() / (2 * shape[0]))
        elif name.endswith("norm.weight") or ".norm" in name:
            out[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = shape[-1] if len(shape) == 2 else 1
            scale = 1.0 if name == "vocab_embed.weight" else 1.0 / np.sqrt(fan_in)
            out[name] = scale * torch.randn(shape, generator=gen)
    return out


REFERENCE_CONFIG = {
    "tokens": 36,
    "model": {"hidden_size": 768, "n_heads": 12},
    "noise": {"type": "cosine", "sigma_min": 1e-4, "sigma_max": 0.5, "eps": 0.02},
}


def reference_checkpoint(state_dict, ema_state_dict=None, config=None) -> dict:
    """The reference trainer's `save_checkpoint` layout (reference-system.md §4.1)."""
    params = [v for k, v in state_dict.items() if not k.endswith("inv_freq")]
    shadows = params if ema_state_dict is None else list(ema_state_dict.values())
    return {
        "step": 500,
        "epoch": 3,
        "best_loss": 1.5,
        "model_state_dict": state_dict,
        "ema_state_dict": {"decay": 0.9995, "num_updates": 500, "shadow_params": shadows},
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "scaler_state_dict": None,
        "noise_state_dict": {},
        "config": config if config is not None else REFERENCE_CONFIG,
    }


# --------------------------------------------------------------- tiny dual-track models


def tiny_dual(protein_vocab: int, ligand_vocab: int, **fields) -> DualTrackSEDD:
    """A DualTrackSEDD 16 wide, one block per track, 2 heads, cond_dim 8, no dropout;
    `fields` override these or set others."""
    tiny = dict(
        hidden=16, n_blocks_protein=1, n_blocks_ligand=1, n_heads=2, cond_dim=8, dropout=0.0
    )
    return DualTrackSEDD(protein_vocab, ligand_vocab, **(tiny | fields))


def dual_param_shapes(model: DualTrackSEDD):
    """The model's parameters as shapes (traced on [1, 4] tracks, nothing run)."""
    dummy = jnp.zeros((1, 4), jnp.int32)
    init = functools.partial(model.init, mode="joint")
    return jax.eval_shape(init, jax.random.key(0), dummy, dummy, jnp.ones((1,)))["params"]


def open_gate_params(model: DualTrackSEDD, seed: int = 0):
    """Random parameters with every adaLN gate open (numpy draws: nothing to compile):
    kernels N(0, 1/fan_in), norm weights 1 + N(0, 0.01), embeddings N(0, 1), the rest
    N(0, 0.01)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if "kernel" in name:
            return noise / np.sqrt(leaf.shape[0])
        if "weight" in name:
            return 1.0 + 0.1 * noise
        return noise if "embed" in name else 0.1 * noise

    return jax.tree_util.tree_map_with_path(draw, dual_param_shapes(model))


# ---------------------------------------------------------------- single-track losses


def fixed_draw_loss(model, graph, noise, x, valid):
    """params -> the per-token loss of `single_track_objective` (sampling_eps 1e-3) on
    tokens x [B, L] with valid [B, L], at fixed draws (keys 2 and 3, step 0)."""
    objective, _ = single_track_objective(model, graph, noise, 1e-3)

    def loss(params):
        batch = {"tokens": x, "valid": valid, "example_id": jnp.arange(x.shape[0])}
        total, count, _ = objective(params, batch, jax.random.key(2), 0, jax.random.key(3))
        return total / count

    return loss


# ---------------------------------------------- samplers with the exact score of i.i.d. tokens

ORACLE_NOISE = LogLinearNoise(1e-3)


def chi_square_p_value(counts: np.ndarray, probs: np.ndarray) -> float:
    """P-value of observed counts [K] under probabilities [K] (cells with p = 0 must be 0)."""
    support = probs > 0
    assert counts[~support].sum() == 0, counts
    expected = probs[support] * counts.sum()
    stat = ((counts[support] - expected) ** 2 / expected).sum()
    return float(scipy.stats.chi2.sf(stat, support.sum() - 1))


def oracle_sample(probs, graph, x_init, key=None, **options):
    """`pc_sample(..., **options)` from x_init [B, L] with the exact log-score of i.i.d.
    tokens ~ probs [N] on `graph`, under ORACLE_NOISE."""
    log_score_fn = unigram_log_score_fn(jnp.log(probs), graph)
    return pc_sample(log_score_fn, graph, ORACLE_NOISE, x_init, key, **options)


def race_oracle_sample(probs, predictor: str, steps: int, shape, seed: int = 0, **options):
    """One compiled `pc_sample` on the absorbing graph of len(probs) tokens, exact i.i.d.
    score, from all-mask rows [B, L] = shape, with the race uniforms of PRNGKey(seed):
    (tokens [B, L] numpy, score calls)."""
    graph = Absorbing(len(probs))
    log_score_fn = unigram_log_score_fn(jnp.log(probs), graph)
    u = race_uniform(jax.random.PRNGKey(seed), (steps + 1, *shape, graph.dim))
    x0 = jnp.full(shape, graph.mask_id, jnp.int32)
    options |= dict(steps=steps, predictor=predictor, return_calls=True)
    sample = jax.jit(
        lambda u: pc_sample(log_score_fn, graph, ORACLE_NOISE, x0, uniforms=u, **options)
    )
    x, calls = sample(u)
    return np.asarray(x), int(calls)


# -------------------------------------------------------------- the exact pair oracle

JOINT = np.array([[0.30, 0.02, 0.03], [0.02, 0.25, 0.03], [0.05, 0.05, 0.25]])  # p(a, b)
K = JOINT.shape[0]
PAIR_GRAPHS = PairGraphs(Absorbing(K), Absorbing(K))
PAIR_NOISE = LogLinearNoise(1e-3)


def oracle_pair_score(p_t, l_t, sigma, p_valid, l_valid, mode):
    """Exact log-scores of one-token tracks [B, 1] under JOINT (absorbing, shared sigma).

    A masked position's ratios are p(y | other) / (e^sigma - 1) when the other track is
    clean, p(y) / (e^sigma - 1) when it is masked; a clean position has 0 at itself and
    -inf elsewhere (the mask column of a masked position is 0, as `oracles`).
    """
    del p_valid, l_valid, mode
    log_joint = jnp.log(jnp.asarray(JOINT, jnp.float32))
    log_p_a = jax.nn.logsumexp(log_joint, axis=1)
    log_p_b = jax.nn.logsumexp(log_joint, axis=0)
    shift = jnp.log(esigm1(sigma))[:, None]  # [B, 1]

    def track(x, other, log_marginal, log_cond):
        """log_cond[c, y] = log p(y | other = c)."""
        other_masked = (other[:, 0] == K)[:, None]
        given = jnp.where(
            other_masked, log_marginal[None], log_cond[jnp.minimum(other[:, 0], K - 1)]
        )
        masked_row = jnp.concatenate([given - shift, jnp.zeros((x.shape[0], 1))], axis=-1)
        clean_row = jnp.where(jax.nn.one_hot(x[:, 0], K + 1, dtype=bool), 0.0, -jnp.inf)
        return jnp.where((x[:, 0] == K)[:, None], masked_row, clean_row)[:, None, :]

    protein = track(p_t, l_t, log_p_a, (log_joint - log_p_b[None, :]).T)
    ligand = track(l_t, p_t, log_p_b, log_joint - log_p_a[:, None])
    return protein, ligand


def unconditional_aware_oracle(p_t, l_t, sigma, p_valid, l_valid, mode):
    """The oracle, with `*_only` modes scoring a track without seeing the other one."""
    if mode == "ligand_only":
        hidden = jnp.full_like(p_t, K)
        return None, oracle_pair_score(hidden, l_t, sigma, p_valid, l_valid, mode)[1]
    if mode == "protein_only":
        hidden = jnp.full_like(l_t, K)
        return oracle_pair_score(p_t, hidden, sigma, p_valid, l_valid, mode)[0], None
    return oracle_pair_score(p_t, l_t, sigma, p_valid, l_valid, mode)


# ------------------------------------------------- parity: identical JAX and torch models

VOCAB = 26  # 25 protein ids + the absorbing state
PROTEIN_V, LIGAND_V = 26, 40  # the dual-track model's vocabularies
STEP_EPS = 1e-3  # the smallest diffusion time of the step-parity tests


def tiny_kwargs(variant: str, **overrides) -> dict:
    kwargs = dict(
        vocab_size=VOCAB,
        hidden=64,
        n_blocks=2,
        n_heads=4,
        cond_dim=32,
        mlp_ratio=4,
        dropout=0.0,
        variant=variant,
        scale_by_sigma=True,
    )
    return kwargs | overrides


def example_inputs(batch=3, length=17, seed=0):
    """x [B, L] int32 (some masks), sigma [B], valid [B, L] with padded rows."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, size=(batch, length)).astype(np.int32)
    sigma = np.array([0.05, 0.7, 3.0, 0.3, 1.5, 6.0][:batch], np.float32)
    lengths = np.array([length, length * 2 // 3, 4, length, 6, 9][:batch])
    valid = np.arange(length)[None] < lengths[:, None]
    return x, sigma, valid


def step_optim_config():
    """The optimizer of the step-parity tests: lr(0) > 0 then a cosine, decay, active
    clipping."""
    c = base_config().optim
    c.lr, c.warmup, c.warmup_init_fraction = 2e-3, 2, 0.5  # lr(0) > 0, then a cosine
    c.weight_decay, c.grad_clip = 0.1, 0.05  # decay and (active) clipping
    return c


PARITY_STEP_TOTAL, PARITY_EMA = 20, 0.999  # schedule length and EMA of the step parity


class ParitySteps:
    """Optimizer steps in both frameworks from the same weights (the step-parity tests):
    `jax(batch)` and `torch(batch, rand)` each take one step (`step_optim_config`, EMA
    `PARITY_EMA`) and return its metrics; `rng` is the JAX state's key data (to replay
    its draws in the twin); `assert_weights_match` compares params and EMA at the end."""

    def __init__(self, params, twin, jax_objective, torch_objective, seed: int, optimizer="adamw"):
        from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
        from sedd_jax.training.state import TrainState
        from sedd_jax.training.step import micro_batches, train_step
        from sedd_torch.training import optim as torch_optim
        from sedd_torch.training.state import create_train_state

        self.oc = oc = step_optim_config()
        oc.optimizer = optimizer
        tx = make_optimizer(oc, PARITY_STEP_TOTAL)
        self.schedule = learning_rate_schedule(oc, PARITY_STEP_TOTAL)
        self.rng = jax.random.key_data(jax.random.key(seed))
        self.start = params
        self.state = TrainState(jnp.zeros((), jnp.int32), params, params, tx.init(params), self.rng)
        objective, step_metrics = jax_objective
        self._jax_step = jax.jit(
            lambda s, b: train_step(
                s,
                micro_batches(b, 1),
                objective=objective,
                step_metrics=step_metrics,
                tx=tx,
                lr_schedule=self.schedule,
                ema=PARITY_EMA,
                axis_name=None,
            )
        )
        self.torch_state = create_train_state(twin, lambda ps: torch_optim.make_optimizer(ps, oc))
        self._torch = (*torch_objective, torch_optim.learning_rate_schedule(oc, PARITY_STEP_TOTAL))

    def jax(self, batch) -> dict:
        self.state, metrics = self._jax_step(self.state, batch)
        return metrics

    def torch(self, batch, rand) -> dict:
        from sedd_torch.training.step import train_step

        objective, step_metrics, schedule = self._torch
        return train_step(
            self.torch_state,
            batch,
            objective=objective,
            step_metrics=step_metrics,
            lr_schedule=schedule,
            ema=PARITY_EMA,
            grad_clip=self.oc.grad_clip,
            seed=0,
            rand=rand,
        )

    def assert_weights_match(self, steps: int, variant: str, record, tol: float, label=""):
        """After `steps` steps: params and EMA within max|d| / (1 + max|p|) <= tol (recorded
        with the ratio of the largest difference to the largest update), the weights moved,
        and the twin's learning rate is the schedule's."""
        import torch

        from sedd_jax import conversion

        assert int(self.state.step) == self.torch_state.step == steps
        start = conversion.flax_to_torch(self.start, variant)
        for name, tree, module in (
            ("params", self.state.params, self.torch_state.model),
            ("EMA", self.state.ema_params, self.torch_state.ema_model),
        ):
            expected = conversion.flax_to_torch(jax.device_get(tree), variant)
            got = {n: p.detach().numpy() for n, p in module.named_parameters()}
            moved = max(np.abs(expected[k] - start[k]).max() for k in expected)
            worst = max(np.abs(expected[k] - got[k]).max() for k in expected)
            error = worst / (1.0 + max(np.abs(v).max() for v in expected.values()))
            record(f"{label}{name} after {steps} steps max|d|/(1+max)", error, tol)
            record(f"{label}{name}: max|d| / max|update|", worst / moved, None)
            assert moved > 1e-3  # the steps changed the weights
            assert error <= tol
        with torch.no_grad():
            lr = self.torch_state.optimizer.param_groups[0]["lr"]
            assert lr == self.schedule(steps - 1)


@functools.lru_cache
def _random_params(model, seed: int):
    x, sigma, valid = example_inputs()
    return random_params(model, x, sigma, valid, seed)


def random_params(model, x, sigma, valid, seed=0):
    """Random parameters for `model` (see `random_like`)."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.asarray(x), jnp.asarray(sigma), valid)
    )["params"]
    return random_like(shapes, seed)


def random_like(shapes, seed=0):
    """Random float32 parameters of these shapes, every layer non-trivial (adaLN and the
    `sedd` output layer are zero at init): kernels N(0, 1/fan_in), tables N(0, 1), norm
    weights 1 + N(0, 0.01), biases N(0, 0.01). numpy draws, so nothing is compiled."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if name == "kernel":
            return jnp.asarray(noise / np.sqrt(leaf.shape[0]))
        if name == "weight":
            return jnp.asarray(1.0 + 0.1 * noise)
        return jnp.asarray(noise if len(path) == 1 else 0.1 * noise)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def torch_state_dict(params, kwargs) -> dict:
    import torch

    from sedd_jax import conversion

    arrays = conversion.flax_to_torch(params, kwargs["variant"])
    arrays = conversion.with_rotary_buffer(arrays, kwargs["hidden"] // kwargs["n_heads"])
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def twin_pair(variant: str, seed=0, **overrides):
    """(flax model, params, torch twin holding the same weights, kwargs)."""
    from sedd_jax.models.sedd import SEDD
    from sedd_torch.models.sedd import SEDD as TorchSEDD

    kwargs = tiny_kwargs(variant, **overrides)
    model = SEDD(**kwargs)
    params = _random_params(model, seed)  # flax modules hash by their fields
    twin = TorchSEDD(**kwargs)
    twin.load_state_dict(torch_state_dict(params, kwargs))
    return model, params, twin.eval(), kwargs


def t(array, dtype=None):
    """numpy/JAX array -> torch tensor (int32 -> long)."""
    import torch

    tensor = torch.as_tensor(np.asarray(array))
    if tensor.dtype == torch.int32:
        tensor = tensor.long()
    return tensor if dtype is None else tensor.to(dtype)


def max_error(a, b) -> float:
    """max |a - b| / (1 + max |a|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / (1.0 + np.abs(a).max()))


class ReplayRand:
    """A `rand(shape)` that hands out pre-drawn arrays (sedd_jax's draws) in order."""

    def __init__(self, *draws):
        self.draws = [np.asarray(d) for d in draws]

    def __call__(self, shape):
        import torch

        draw = self.draws.pop(0)
        assert draw.shape == tuple(shape), (draw.shape, tuple(shape))
        return torch.from_numpy(draw.copy())

    def exhausted(self) -> bool:
        return not self.draws


def pair_parity_batch() -> dict:
    """Three protein (13 ids, padded rows) / ligand (9 ids, 9, 3 and 5 valid) pairs, numpy,
    no absorbing ids: the batch of the dual-track loss and sampler parity tests."""
    protein, _, protein_valid = example_inputs(length=13, seed=1)
    ligand = np.random.default_rng(2).integers(0, LIGAND_V - 1, size=(3, 9)).astype(np.int32)
    return {
        "protein": protein % (PROTEIN_V - 1),
        "protein_valid": protein_valid,
        "ligand": ligand,
        "ligand_valid": np.arange(9)[None] < np.array([9, 3, 5])[:, None],
    }


def parity_pair_graphs():
    """(sedd_jax, sedd_torch) PairGraphs, absorbing on PROTEIN_V - 1 and LIGAND_V - 1 ids."""
    from sedd_torch.diffusion.graphs import Absorbing as TorchAbsorbing
    from sedd_torch.diffusion.joint import PairGraphs as TorchPairGraphs

    return (
        PairGraphs(Absorbing(PROTEIN_V - 1), Absorbing(LIGAND_V - 1)),
        TorchPairGraphs(TorchAbsorbing(PROTEIN_V - 1), TorchAbsorbing(LIGAND_V - 1)),
    )


def replay_pair_corruption(key, batch) -> ReplayRand:
    """The uniforms sedd_jax's joint loss draws from `key` to corrupt the batch (protein,
    then ligand), handed out to the twin in that order."""
    p_key, l_key = jax.random.split(key)
    return ReplayRand(uniform(p_key, batch["protein"].shape), uniform(l_key, batch["ligand"].shape))


def twin_diffusion(twin, graph_type: str, n: int, valid):
    """The twin's side of a single-track parity test: (log_score_fn scoring with valid [B, L],
    sedd_torch's `graph_type` graph of n ids, its LogLinearNoise)."""
    from sedd_torch.diffusion import graphs as torch_graphs
    from sedd_torch.diffusion import noise as torch_noise

    valid_t = t(valid)
    return (
        lambda x, sigma: twin(x, sigma, valid_t),
        torch_graphs.GRAPHS[graph_type](n),
        torch_noise.LogLinearNoise(),
    )


def dual_pair(variant, **overrides):
    """(flax DualTrackSEDD, random params, the twin holding them); asserts that the twin's
    state_dict names and order are the conversion's. `overrides`: more model fields (e.g.
    the length heads: length_head=True, max_protein_len=..., max_ligand_len=...)."""
    import torch

    from sedd_jax import conversion
    from sedd_torch.models.dual import DualTrackSEDD as TorchDual

    kwargs = dict(
        protein_vocab=PROTEIN_V,
        ligand_vocab=LIGAND_V,
        hidden=64,
        n_blocks_protein=2,
        n_blocks_ligand=1,  # unequal depths: the protein's first block runs alone
        n_heads=4,
        cond_dim=32,
        dropout=0.0,
        variant=variant,
        **overrides,
    )
    model = DualTrackSEDD(**kwargs)
    protein, ligand = jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), protein, ligand, jnp.ones((1,)), mode="joint")
    )["params"]
    params = random_like(shapes, seed=3)
    twin = TorchDual(**kwargs).eval()
    arrays = conversion.with_rotary_buffer(conversion.flax_to_torch(params, variant), 16)
    assert list(arrays) == list(twin.state_dict())  # names and registration order
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    return model, params, twin
