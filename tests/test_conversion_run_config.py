"""Imports that never guess: the run's own config (upstream `.hydra/config.yaml`, the
reference's pickled Config) or flags fix the graph, tokens and noise; what cannot be
mapped is refused by name; files load with weights_only=True."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax import conversion
from sedd_jax.conversion.run_settings import ImportOptions
from sedd_torch.models.sedd import SEDD as TorchSEDD
from tests.helpers import (
    conversion_config,
    random_weights,
    reference_checkpoint,
    reference_state_dict,
    run_cli,
)

torch.set_num_threads(1)

# upstream's configs/config.yaml as Hydra writes it into <run>/.hydra/config.yaml, with a
# tiny model (upstream's own YAML spells 1e-4 so that PyYAML reads a string)
UPSTREAM_YAML = """\
ngpus: 1
tokens: {tokens}
training:
  batch_size: 8
  accum: 1
  n_iters: 5
  snapshot_freq: 5
  log_freq: 1
  eval_freq: 5
  snapshot_freq_for_preemption: 5
  weight: standard
  snapshot_sampling: false
  ema: 0.9999
data:
  train: text8
  valid: text8
  cache_dir: data
graph:
  type: {graph}
  file: data
  report_all: false
noise:
  type: {noise}
  sigma_min: 1e-4
  sigma_max: {sigma_max}
sampling:
  predictor: euler
  steps: 64
  noise_removal: true
eval:
  batch_size: 8
  perplexity: false
  perplexity_batch_size: 4
optim:
  weight_decay: 0
  optimizer: AdamW
  lr: 3e-4
  beta1: 0.9
  beta2: 0.999
  eps: 1e-8
  warmup: 2500
  grad_clip: 1.
model:
  name: tiny
  type: ddit
  hidden_size: 32
  cond_dim: 16
  length: 24
  n_blocks: 2
  n_heads: 4
  scale_by_sigma: {scale_by_sigma}
  dropout: 0.1
{extra}"""


@dataclasses.dataclass
class UpstreamRun:
    path: str  # <run>/checkpoints/checkpoint_1.pth
    twin: TorchSEDD  # raw weights
    ema_twin: TorchSEDD  # the EMA's weights
    tokens: int
    absorb: bool


def upstream_run(root, graph="uniform", tokens=30, noise="geometric", sigma_max=20.0, **kw):
    """An upstream-format run: the twin's `sedd` model (upstream's names) with every weight
    perturbed, one AdamW step taken, saved with upstream's `save_checkpoint` keys (its
    warm-up leaves a numpy float learning rate in the optimizer state) beside a
    `.hydra/config.yaml`."""
    absorb = graph == "absorb"
    scale = kw.get("scale_by_sigma", absorb)
    torch.manual_seed(tokens + absorb)
    make = lambda: TorchSEDD(  # noqa: E731
        tokens + absorb,
        32,
        2,
        4,
        16,
        dropout=0.0,
        variant="sedd",
        scale_by_sigma=scale,
        absorb=absorb,
    ).eval()
    twin = make()
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1 * torch.randn_like(p))
    optimizer = torch.optim.AdamW(twin.parameters(), lr=3e-4)
    x = torch.randint(0, tokens, (2, 12))
    twin(x, torch.tensor([0.5, 2.0])).square().mean().backward()
    optimizer.step()
    for group in optimizer.param_groups:
        group["lr"] = 3e-4 * np.minimum(5 / 2500, 1.0)  # upstream's optimization_manager
    ema_twin = make()
    with torch.no_grad():
        for p, q in zip(ema_twin.parameters(), twin.parameters(), strict=True):
            p.copy_(0.9 * q + 0.05 * torch.randn_like(q))
    ema = {"decay": 0.9999, "num_updates": 5, "shadow_params": list(ema_twin.parameters())}
    run = os.path.join(root, "run")
    os.makedirs(os.path.join(run, "checkpoints"))
    path = os.path.join(run, "checkpoints", "checkpoint_1.pth")
    torch.save(
        {"optimizer": optimizer.state_dict(), "model": twin.state_dict(), "ema": ema, "step": 5},
        path,
    )
    if kw.get("yaml", True):
        os.makedirs(os.path.join(run, ".hydra"))
        text = UPSTREAM_YAML.format(
            tokens=tokens,
            graph=graph,
            noise=noise,
            sigma_max=sigma_max,
            scale_by_sigma=str(scale),
            extra=kw.get("extra", ""),
        )
        with open(os.path.join(run, ".hydra", "config.yaml"), "w") as f:
            f.write(text)
    return UpstreamRun(path, twin, ema_twin, tokens, absorb)


def max_log_score_error(weights: conversion.Weights, run: UpstreamRun) -> tuple[float, float]:
    """max |JAX - twin| over raw and EMA weights, at sigma from 1e-4 to 5 (and max |s|)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, run.tokens + run.absorb, size=(4, 13)).astype(np.int32)
    sigma = np.array([1e-4, 0.3, 1.0, 5.0], np.float32)
    apply = jax.jit(conversion.model_for(weights.config).apply)
    errors, largest = [], 0.0
    for params, twin in ((weights.params, run.twin), (weights.ema_params, run.ema_twin)):
        with torch.no_grad():
            expected = twin(torch.as_tensor(x).long(), torch.as_tensor(sigma)).numpy()
        got = np.asarray(apply({"params": params}, jnp.asarray(x), sigma))
        errors.append(float(np.abs(expected - got).max()))
        largest = max(largest, float(np.abs(expected).max()))
    return max(errors), largest


def convert_cli(*args):
    return run_cli("sedd_jax.convert", *args, env={"JAX_PLATFORMS": "cpu"}, check=False)


# ------------------------------------------------------------------------- upstream


@pytest.mark.slow
def test_upstream_uniform_run_imports_with_its_config_and_the_twins_log_scores(tmp_path):
    run = upstream_run(str(tmp_path), "uniform", 30, "geometric", sigma_max=20.0)
    result = convert_cli(f"--src={run.path}", f"--dst={tmp_path}/jax")
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "graph uniform, 30 tokens (V = 30)" in result.stdout
    assert "noise geometric (sigma_min=0.0001, sigma_max=20.0)" in result.stdout
    weights = conversion.read_orbax(f"{tmp_path}/jax")
    info = weights.meta["converted_from"]
    assert (info["graph"], info["tokens"], info["vocab_size"]) == ("uniform", 30, 30)
    assert info["noise"] == {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0}
    assert info["scale_by_sigma"] is False and info["variant"] == "sedd"
    assert (info["step"], info["weights"], info["loaded_with"]) == (5, "both", "weights_only")
    assert info["config_from"].endswith(os.path.join("run", ".hydra", "config.yaml"))
    assert "optim.lr" in info["ignored"] and "graph.report_all" in info["ignored"]
    config = weights.config
    assert (config.graph.type, config.data.vocab_size, config.model.scale_by_sigma) == (
        "uniform",
        30,
        False,
    )
    assert (config.noise.type, config.noise.sigma_min, config.noise.sigma_max) == (
        "geometric",
        1e-4,
        20.0,
    )
    assert (config.data.max_len, config.sampling.steps, config.model.dropout) == (24, 64, 0.1)
    error, largest = max_log_score_error(weights, run)
    print(f"uniform/geometric: max |JAX - twin| = {error:.2e} (max |s| = {largest:.1f})")
    assert largest > 1.0 and error <= 2e-6


@pytest.mark.slow
def test_without_a_config_an_ambiguous_checkpoint_is_refused_until_flags_say(tmp_path):
    run = upstream_run(str(tmp_path), "uniform", 30, yaml=False)
    refused = convert_cli(f"--src={run.path}", f"--dst={tmp_path}/no")
    assert refused.returncode != 0 and not os.path.exists(f"{tmp_path}/no")
    message = refused.stderr.strip()
    print(message)
    assert len(message.splitlines()) == 1 and "Traceback" not in refused.stderr
    for flag in ("--graph", "--noise", "--tokens", "--sigma_min", "--sigma_max", "--run_config"):
        assert flag in message
    assert "no run config at" in message and ".hydra/config.yaml" in message

    flags = ["--graph=uniform", "--tokens=30", "--noise=geometric"]
    flags += ["--sigma_min=1e-4", "--sigma_max=20", "--weights=ema"]
    result = convert_cli(f"--src={run.path}", f"--dst={tmp_path}/jax", *flags)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    weights = conversion.read_orbax(f"{tmp_path}/jax")
    info = weights.meta["converted_from"]
    assert (info["graph"], info["tokens"], info["weights"]) == ("uniform", 30, "ema")
    assert info["noise"] == {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0}
    assert info["sources"]["graph.type"] == "flag"
    assert np.array_equal(
        weights.params["vocab_embed"], run.ema_twin.vocab_embed.embedding.detach().numpy()
    )


GEOMETRIC_8 = {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 8.0}
LOGLINEAR = {"type": "loglinear", "eps": 1e-3}  # upstream's LogLinearNoise() reads no sigma


@pytest.mark.parametrize(
    "graph, tokens, noise, expected",
    [
        ("absorb", 29, "loglinear", LOGLINEAR),
        ("absorb", 29, "geometric", GEOMETRIC_8),
        ("uniform", 30, "loglinear", LOGLINEAR),
    ],
    ids=["absorb-loglinear", "absorb-geometric", "uniform-loglinear"],
)
def test_upstream_runs_import_their_graph_noise_and_log_scores(
    tmp_path, graph, tokens, noise, expected
):
    """Absorbing runs import exactly as before (the sigma shift applied); uniform runs
    with upstream's semantics (never shifted)."""
    run = upstream_run(str(tmp_path), graph, tokens, noise, sigma_max=8.0)
    weights = conversion.import_torch_weights(run.path)
    info = weights.meta["converted_from"]
    assert (info["graph"], info["tokens"], info["vocab_size"]) == (graph, tokens, 30)
    assert info["noise"] == expected and info["scale_by_sigma"] is (graph == "absorb")
    if noise == "loglinear":
        assert "noise.sigma_min" in info["ignored"] and "noise.sigma_max" in info["ignored"]
    error, largest = max_log_score_error(weights, run)
    print(f"{graph}/{noise}: max |JAX - twin| = {error:.2e} (max |s| = {largest:.1f})")
    assert largest > 1.0 and error <= 2e-6
    if graph == "uniform":  # the model itself never shifts a uniform graph
        weights.config.model.scale_by_sigma = True
        assert max_log_score_error(weights, run)[0] == error


@pytest.mark.parametrize(
    "extra, scale, key",
    [
        ("", True, "--scale_by_sigma=false"),  # uniform + shift: upstream's model asserts
        ("  attention_bias: true\n", False, "model.attention_bias"),
        ("diffusion:\n  steps: 3\n", False, "diffusion.steps"),
    ],
    ids=["uniform_with_shift", "unknown_model_key", "unknown_section"],
)
def test_a_config_field_that_cannot_be_mapped_is_refused_by_name(tmp_path, extra, scale, key):
    run = upstream_run(str(tmp_path), "uniform", 30, extra=extra, scale_by_sigma=scale)
    with pytest.raises(conversion.ConversionError) as error:
        conversion.import_torch_weights(run.path)
    message = str(error.value)
    assert key in message and "config.yaml" in message and "\n" not in message


def test_flags_win_over_the_config_and_tokens_are_checked(tmp_path):
    run = upstream_run(str(tmp_path), "uniform", 30, scale_by_sigma=True)
    options = ImportOptions(scale_by_sigma=False, tokens=30)
    weights = conversion.import_torch_weights(run.path, "params", options)
    assert weights.meta["converted_from"]["sources"]["model.scale_by_sigma"].startswith("flag")
    with pytest.raises(conversion.ConversionError, match="tokens=29 with a uniform graph"):
        conversion.import_torch_weights(
            run.path, "params", ImportOptions(scale_by_sigma=False, tokens=29)
        )


# ------------------------------------------------------------------ reference system


@dataclasses.dataclass
class Config:
    """The reference's protlig_dd.utils.utils.Config, as it pickles (a dataclass holding
    its YAML as `dictionary`, with every key also set as an attribute)."""

    dictionary: dict | None = None
    yamlfile: str | None = None

    def __post_init__(self):
        for key, value in (self.dictionary or {}).items():
            setattr(self, key, Config(dictionary=value) if isinstance(value, dict) else value)


def save_with_module(obj, path, module_name, cls):
    """torch.save with `cls` pickled as `<module_name>.<cls name>`, a module that is gone
    when the file is read."""
    parts = module_name.split(".")
    modules = {
        ".".join(parts[: i + 1]): types.ModuleType(".".join(parts[: i + 1]))
        for i in range(len(parts))
    }
    setattr(modules[module_name], cls.__name__, cls)
    cls.__module__, cls.__qualname__ = module_name, cls.__name__
    sys.modules.update(modules)
    try:
        torch.save(obj, path)
    finally:
        for name in modules:
            del sys.modules[name]


def reference_run(path, noise):
    raw = reference_state_dict(64, 2, 4, 32, 37, seed=1)
    ema = {k: v + 1.0 for k, v in raw.items() if not k.endswith("inv_freq")}
    values = {
        "tokens": 36,
        "graph": {"type": "absorb", "file": "data", "report_all": False},
        "model": {"hidden_size": 64, "n_blocks_prot": 2, "n_heads": 4, "cond_dim": 32},
        "noise": noise,
        "curriculum": {"enabled": True, "preschool_time": 2500},
        "optim": {"lr": 5e-5},
    }
    values["model"] |= {"dropout": 0.15, "scale_by_sigma": True, "esm_dim": 640}
    checkpoint = reference_checkpoint(raw, ema, Config(dictionary=values, yamlfile="c.yaml"))
    save_with_module(checkpoint, path, "protlig_dd.utils.utils", Config)
    return raw, ema


def test_reference_checkpoint_with_pickled_config_loads_weights_only_with_its_noise(
    tmp_path, caplog
):
    path = str(tmp_path / "checkpoint_step_500.pth")
    noise = {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 12.0, "eps": 0.02}
    raw, ema = reference_run(path, noise)
    with pytest.raises(Exception):  # noqa: B017  the class is gone: a plain load fails
        torch.load(path, weights_only=False)
    with caplog.at_level(logging.WARNING):
        weights = conversion.import_torch_weights(path, "ema")
    assert not caplog.records  # no full-pickle warning
    info = weights.meta["converted_from"]
    assert (info["layout"], info["loaded_with"]) == ("reference", "weights_only")
    assert info["config_from"].endswith("pickled Config (of c.yaml)")
    assert info["sources"]["noise.sigma_max"].endswith("noise.sigma_max")
    assert (info["graph"], info["tokens"], info["scale_by_sigma"]) == ("absorb", 36, True)
    assert info["noise"] == {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 12.0}
    assert "noise.eps" in info["ignored"] and "curriculum.enabled" in info["ignored"]
    assert weights.config.model.dropout == 0.1  # transformer_v100 hard-codes it
    assert np.array_equal(weights.params["vocab_embed"], ema["vocab_embed.weight"].numpy())


def test_unknown_pickled_class_is_refused_unless_trusted(tmp_path):
    @dataclasses.dataclass
    class Payload:
        note: str = "hi"

    raw = reference_state_dict(64, 2, 4, 32, 37, seed=1)
    config = {"tokens": 36, "noise": {"type": "loglinear", "eps": 0.01}}
    checkpoint = reference_checkpoint(raw, config=config) | {"extra": Payload()}
    path = str(tmp_path / "odd.pth")
    save_with_module(checkpoint, path, "someones.module", Payload)
    with pytest.raises(conversion.ConversionError) as error:
        conversion.read_torch_checkpoint(path)
    message = str(error.value)
    assert "someones.module.Payload" in message and "--trust_pickle" in message
    assert "\x1b" not in message and "\n" not in message
    ckpt = conversion.read_torch_checkpoint(path, ImportOptions(trust_pickle=True))
    assert ckpt.provenance["loaded_with"] == "full pickle (--trust_pickle)"
    assert (ckpt.config.noise.type, ckpt.config.noise.eps) == ("loglinear", 0.01)


# ---------------------------------------------------------------------- round trips


def test_uniform_geometric_run_round_trips_with_its_config_and_log_scores(tmp_path):
    config = conversion_config("sedd")
    config.graph.type, config.data.vocab_size = "uniform", 30
    config.noise.type, config.noise.sigma_min, config.noise.sigma_max = "geometric", 1e-4, 20.0
    weights = random_weights(config)
    conversion.write_orbax(str(tmp_path / "run"), weights)
    original = conversion.read_orbax(str(tmp_path / "run"))
    x = np.random.default_rng(2).integers(0, 30, size=(2, 9)).astype(np.int32)
    sigma = np.array([1e-4, 5.0], np.float32)
    apply = jax.jit(conversion.model_for(original.config).apply)
    want = np.asarray(apply({"params": original.ema_params}, jnp.asarray(x), sigma))
    for suffix in (".pt", ".safetensors"):
        path = conversion.export_torch(str(tmp_path / "run"), str(tmp_path / f"u{suffix}"))
        conversion.import_torch(path, str(tmp_path / f"back{suffix}"))
        back = conversion.read_orbax(str(tmp_path / f"back{suffix}"))
        assert back.config.to_dict() == original.config.to_dict()
        assert back.meta["converted_from"]["graph"] == "uniform"
        assert back.meta["converted_from"]["noise"]["sigma_max"] == 20.0
        back_apply = jax.jit(conversion.model_for(back.config).apply)
        got = np.asarray(back_apply({"params": back.ema_params}, jnp.asarray(x), sigma))
        assert np.array_equal(got, want)
