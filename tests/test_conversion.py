"""Checkpoint conversion: exact round trips, reference and upstream imports, clear errors,
and the torch trainer's checkpoint sampled by JAX."""

from __future__ import annotations

import dataclasses
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax import conversion
from sedd_jax.models.sedd import expected_parameter_count
from sedd_jax.training import checkpoint
from sedd_jax.training.optim import make_optimizer
from sedd_jax.training.state import create_train_state
from sedd_torch.models.sedd import SEDD as TorchSEDD
from tests.helpers import (
    LEARNS,
    REFERENCE_CONFIG,
    conversion_config,
    random_weights,
    reference_checkpoint,
    reference_state_dict,
    run_cli,
    tiny_config,
)

torch.set_num_threads(1)  # small models; threads only contend on a busy 2-core machine


def restore_as_the_loop_does(workdir, config):
    """The loop's resume path: restore_latest into the shape of create_train_state."""
    model = conversion.model_for(config)
    x = jnp.zeros((1, 8), jnp.int32)
    tx = make_optimizer(config.optim, config.training.n_steps)

    def init_params(key):
        return model.init(key, x, jnp.ones((1,)))["params"]

    abstract = jax.eval_shape(
        lambda: create_train_state(init_params, tx, jax.random.key(config.seed))
    )
    manager = checkpoint.make_manager(workdir, keep=3, async_save=False)
    state, meta = checkpoint.restore_latest(manager, abstract)
    manager.close()
    return state, meta


def assert_trees_equal(a, b):
    flat_a = jax.tree_util.tree_leaves_with_path(a)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        other = np.asarray(flat_b[path])
        assert other.dtype == np.float32, path
        assert np.array_equal(np.asarray(leaf), other), path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("variant", ["protlig", "sedd"])
def test_orbax_torch_orbax_round_trip_is_bit_exact(tmp_path, suffix, variant):
    weights = random_weights(conversion_config(variant))
    conversion.write_orbax(str(tmp_path / "run"), weights)
    path = conversion.export_torch(str(tmp_path / "run"), str(tmp_path / f"ckpt{suffix}"))
    conversion.import_torch(path, str(tmp_path / "back"))
    back = conversion.read_orbax(str(tmp_path / "back"))
    assert back.step == weights.step
    assert_trees_equal(weights.params, back.params)
    assert_trees_equal(weights.ema_params, back.ema_params)
    assert back.config.to_dict() == weights.config.to_dict()
    assert back.meta["length_distribution"] == [0.5, 0.5]
    state, _ = restore_as_the_loop_does(str(tmp_path / "back"), back.config)
    assert int(state.step) == weights.step
    assert_trees_equal(weights.ema_params, state.ema_params)


def test_exported_pt_is_the_reference_layout_and_loads_into_the_twin(tmp_path):
    config = conversion_config()
    weights = random_weights(config)
    conversion.export_pt(weights, str(tmp_path / "ckpt.pt"))
    payload = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert {"model_state_dict", "ema_state_dict", "config", "step", "meta"} <= set(payload)
    twin = TorchSEDD(26, 32, 2, 4, 16, dropout=0.0)
    twin.load_state_dict(payload["model_state_dict"])  # strict: names, shapes, buffer
    shadows = payload["ema_state_dict"]["shadow_params"]
    ema = conversion.flax_to_torch(weights.ema_params, "protlig")
    for (name, _), shadow in zip(twin.named_parameters(), shadows, strict=True):
        assert np.array_equal(shadow.numpy(), ema[name]), name
    assert payload["config"]["model"]["hidden"] == 32


def test_export_of_one_weight_set_is_a_plain_state_dict(tmp_path):
    weights = random_weights(conversion_config("sedd"))
    path = conversion.export_safetensors(weights, str(tmp_path / "ema.safetensors"), "ema")
    from safetensors.torch import load_file

    twin = TorchSEDD(26, 32, 2, 4, 16, dropout=0.0, variant="sedd")
    twin.load_state_dict(load_file(path))
    got = twin.output_layer.linear.bias.detach().numpy()
    assert np.array_equal(got, weights.ema_params["output_layer"]["linear"]["bias"])


# --------------------------------------------------------------- reference checkpoints


@pytest.mark.slow
def test_reference_checkpoint_at_the_stable_size_gives_the_twins_log_scores():
    state_dict = reference_state_dict()
    n_params = sum(v.numel() for k, v in state_dict.items() if not k.endswith("inv_freq"))
    assert n_params == 66_724_096 == expected_parameter_count(37, 768, 8, 256)
    ckpt = conversion.read_torch_checkpoint(reference_checkpoint(state_dict))
    assert ckpt.layout == "reference"
    config = ckpt.config
    assert (config.data.vocab_size, config.model.hidden, config.model.n_heads) == (36, 768, 12)
    assert (config.model.n_blocks, config.model.cond_dim, config.model.variant) == (
        8,
        256,
        "protlig",
    )
    weights = conversion.torch_checkpoint_to_weights(ckpt, "ema")

    twin = conversion_twin(config)
    twin.load_state_dict(state_dict)  # the reference names, loaded as they are
    x = np.random.default_rng(0).integers(0, 37, size=(1, 16)).astype(np.int32)
    sigma = np.array([0.8], np.float32)
    with torch.no_grad():
        expected = twin(torch.as_tensor(x).long(), torch.as_tensor(sigma)).numpy()
    model = conversion.model_for(config)
    got = np.asarray(jax.jit(model.apply)({"params": weights.params}, jnp.asarray(x), sigma))
    error = np.abs(expected - got).max() / (1 + np.abs(expected).max())
    assert np.abs(expected).max() > 1.0
    assert error <= 1e-5


def conversion_twin(config):
    m = config.model
    return TorchSEDD(
        config.data.vocab_size + 1,
        m.hidden,
        m.n_blocks,
        m.n_heads,
        m.cond_dim,
        m.mlp_ratio,
        0.0,
        m.variant,
        m.scale_by_sigma,
    ).eval()


def _pickle_with_missing_module(obj_factory, path):
    """Save a checkpoint whose config is an instance of a class from a module that does
    not exist when the file is read (the reference's protlig_dd.utils.utils.Config)."""
    module = types.ModuleType("protlig_dd_fake_utils")

    @dataclasses.dataclass
    class Config:
        dictionary: dict

        def __post_init__(self):
            for key, value in self.dictionary.items():
                setattr(self, key, Config(value) if isinstance(value, dict) else value)

    Config.__module__ = module.__name__
    Config.__qualname__ = "Config"
    module.Config = Config
    sys.modules[module.__name__] = module
    try:
        torch.save(obj_factory(Config), path)
    finally:
        del sys.modules[module.__name__]


def test_trusted_reference_file_with_a_missing_class_imports_and_picks_ema_or_raw(tmp_path):
    """A pickled class outside the allow-list (here from a module that is gone) needs
    --trust_pickle; the lenient unpickler then stubs it and reads the config out of it."""
    raw = reference_state_dict(64, 2, 4, 32, 37, seed=1)
    ema = {k: v + 1.0 for k, v in raw.items() if not k.endswith("inv_freq")}
    ref_config = {
        "tokens": 36,
        "graph": {"type": "absorb"},
        "model": {"dim": 64, "n_blocks_prot": 2, "n_heads": 4, "cond_dim": 32},
        "noise": {"type": "cosine", "sigma_min": 1e-4, "sigma_max": 0.5},
    }
    path = str(tmp_path / "checkpoint_step_500.pth")
    _pickle_with_missing_module(
        lambda Config: reference_checkpoint(raw, ema, Config(ref_config)), path
    )
    with pytest.raises(Exception):  # noqa: B017  the class is gone: a plain load fails
        torch.load(path, weights_only=False)
    with pytest.raises(conversion.ConversionError, match="protlig_dd_fake_utils.Config"):
        conversion.read_torch_checkpoint(path)

    trusted = conversion.ImportOptions(trust_pickle=True)
    for which, source in (("ema", ema), ("params", raw)):
        workdir = str(tmp_path / which)
        conversion.import_torch(path, workdir, weights=which, options=trusted)
        back = conversion.read_orbax(workdir)
        assert back.step == 500
        assert back.config.model.scale_by_sigma is False  # the reference default
        assert back.config.noise.type == "cosine"
        table = source["vocab_embed.weight"].numpy()
        assert np.array_equal(back.params["vocab_embed"], table)
        assert np.array_equal(back.ema_params["vocab_embed"], table)


def test_upstream_sedd_checkpoint_imports_with_its_names():
    torch.manual_seed(0)
    twin = TorchSEDD(26, 32, 2, 4, 16, dropout=0.0, variant="sedd")
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state_dict = twin.state_dict()
    assert "vocab_embed.embedding" in state_dict and "blocks.1.mlp.2.bias" in state_dict
    shadows = [p.detach() * 0.5 for p in twin.parameters()]
    upstream = {
        "model": {f"module.{k}": v for k, v in state_dict.items()},  # DDP-wrapped
        "ema": {"decay": 0.9999, "num_updates": 7, "shadow_params": shadows},
        "step": 7,
        "optimizer": {},
    }
    with pytest.raises(conversion.ConversionError, match="--graph"):
        conversion.read_torch_checkpoint(upstream)  # no .hydra/config.yaml for a dict
    options = conversion.ImportOptions(graph="absorb", noise="loglinear", scale_by_sigma=True)
    ckpt = conversion.read_torch_checkpoint(upstream, options)
    assert ckpt.layout == "upstream" and ckpt.config.noise.eps == 1e-3  # upstream's fixed eps
    assert (ckpt.config.model.variant, ckpt.config.model.n_heads) == ("sedd", 4)
    weights = conversion.torch_checkpoint_to_weights(ckpt, "both")
    bias = weights.ema_params["output_layer"]["linear"]["bias"]
    assert np.array_equal(bias, 0.5 * twin.output_layer.linear.bias.detach().numpy())

    x = np.random.default_rng(1).integers(0, 26, size=(2, 11)).astype(np.int32)
    sigma = np.array([0.3, 2.0], np.float32)
    with torch.no_grad():
        expected = twin(torch.as_tensor(x).long(), torch.as_tensor(sigma)).numpy()
    model = conversion.model_for(ckpt.config)
    got = np.asarray(model.apply({"params": weights.params}, jnp.asarray(x), sigma))
    assert np.abs(expected - got).max() <= 1e-5 * (1 + np.abs(expected).max())


def test_shape_mismatch_names_the_key():
    state_dict = reference_state_dict(64, 2, 4, 32, 37)
    state_dict["blocks.1.mlp.fc1.bias"] = torch.zeros(100)
    with pytest.raises(conversion.ConversionError, match=r"blocks\.1\.mlp\.fc1\.bias.*\(100,\)"):
        conversion.torch_checkpoint_to_weights(
            conversion.read_torch_checkpoint(reference_checkpoint(state_dict))
        )


def test_config_disagreeing_with_the_weights_names_the_keys():
    state_dict = reference_state_dict(64, 2, 4, 32, 37)
    config = dict(REFERENCE_CONFIG, model={"dim": 64, "n_blocks_prot": 3, "n_heads": 8})
    ckpt = conversion.read_torch_checkpoint(reference_checkpoint(state_dict, config=config))
    with pytest.raises(conversion.ConversionError) as error:
        conversion.torch_checkpoint_to_weights(ckpt)
    message = str(error.value)
    assert "missing key 'blocks.2.norm1.weight'" in message
    assert "rotary_emb.inv_freq" in message and "n_heads" in message


@pytest.mark.slow
def test_cli_reports_a_missing_source(tmp_path):
    result = run_cli(
        "sedd_jax.convert", f"--src={tmp_path}/none.pt", "--dst=x", timeout=120, check=False
    )
    assert result.returncode != 0
    assert "none.pt does not exist" in result.stderr


def test_tensor_only_file_loads_without_running_pickled_code(tmp_path):
    """A file of tensors and plain values loads with weights_only=True; without a config
    the graph and noise must be given, the architecture comes from the shapes (heads from
    the rotary buffer)."""
    path = str(tmp_path / "plain.pt")
    torch.save({"model_state_dict": reference_state_dict(64, 2, 4, 32, 37)}, path)
    with pytest.raises(conversion.ConversionError, match="graph.type, noise.type"):
        conversion.read_torch_checkpoint(path)
    options = conversion.ImportOptions(
        graph="absorb", noise="loglinear", noise_eps=0.01, scale_by_sigma=False
    )
    ckpt = conversion.read_torch_checkpoint(path, options)
    assert ckpt.ema is None and ckpt.layout == "reference"
    assert (ckpt.config.model.hidden, ckpt.config.model.n_heads) == (64, 4)
    assert (ckpt.config.model.n_blocks, ckpt.config.data.vocab_size) == (2, 36)


# ------------------------------------------------------------------- torch backend, e2e


def torch_demo_config():
    """The JAX end-to-end test's tiny config (tests/test_train_e2e.py), on the twin."""
    return tiny_config("base", **LEARNS)


@pytest.mark.slow
def test_torch_backend_learns_and_its_checkpoint_samples_in_jax(tmp_path):
    from sedd_jax.common.metrics_log import read_metrics
    from sedd_jax.data.fasta import read_fasta
    from sedd_jax.data.track_data import run_data
    from sedd_jax.diffusion.graphs import get_graph
    from sedd_jax.diffusion.noise import get_noise
    from sedd_jax.training.evaluation import make_eval_step, validation_loss
    from sedd_jax.training.generation import generate, make_sampler
    from sedd_torch.training.loop import train_and_evaluate

    config = torch_demo_config()
    workdir = str(tmp_path / "torch_run")
    summary = train_and_evaluate(config, workdir)
    rows = read_metrics(workdir)
    initial = next(r["val/loss_ema"] for r in rows if "val/loss_ema" in r)
    unigram = next(r["val/loss_unigram"] for r in rows if "val/loss_unigram" in r)
    assert summary["step"] == 300
    assert summary["loss_ema"] < 0.85 * initial
    assert summary["loss_ema"] < unigram - 0.02
    records = read_fasta(summary["samples"])
    assert len(records) == 4
    assert all(set(r.sequence) <= set("ACDEFGHIKLMNPQRSTVWYX") for r in records)

    pt = os.path.join(workdir, "torch_checkpoints", "checkpoint_step_300.pt")
    jax_dir = str(tmp_path / "jax_run")
    result = run_cli("sedd_jax.convert", f"--src={pt}", f"--dst={jax_dir}", check=False)
    assert result.returncode == 0, result.stderr
    weights = conversion.read_orbax(jax_dir)
    assert weights.step == 300 and weights.config.to_dict() == config.to_dict()

    # the EMA weights, evaluated by sedd_jax, also beat the unigram baseline
    data = run_data(weights.config)
    tokenizer = data.tokenizers["tokens"]
    graph_model = conversion.model_for(weights.config)
    graph = get_graph(weights.config.graph, tokenizer.vocab_size)
    noise = get_noise(weights.config.noise)
    eval_step = make_eval_step(graph_model, graph, noise, config.training.sampling_eps)
    jax_loss = validation_loss(
        eval_step,
        weights.ema_params,
        data.val,
        batch_size=32,
        time_samples=8,
        max_batches=0,
        pad_id=tokenizer.pad_id,
        seed=0,
    )
    assert jax_loss < unigram - 0.02  # (torch's estimate used other draws: ~0.05 apart)

    sampler = make_sampler(graph_model, graph, noise, weights.config.sampling)
    tokens, valid = generate(
        sampler,
        weights.ema_params,
        graph,
        tokenizer,
        num=4,
        max_len=32,
        length=0,
        length_dist=np.asarray(weights.meta["length_distribution"]),
        seed=1,
    )
    sequences = tokenizer.decode_batch(tokens, valid)
    assert [len(s) for s in sequences] == valid.sum(axis=1).tolist()
    assert all(s and set(s) <= set("ACDEFGHIKLMNPQRSTVWYX") for s in sequences)


@pytest.mark.slow
def test_dual_track_checkpoint_round_trips_and_loads_into_the_twin(tmp_path):
    from sedd_jax.data.smiles import SmilesTokenizer
    from sedd_jax.defaults import dual_base_config
    from sedd_torch.models.dual import build_dual_model

    config = dual_base_config()
    config.model.hidden, config.model.n_heads, config.model.cond_dim = 32, 4, 16
    config.model.n_blocks_protein, config.model.n_blocks_ligand = 2, 1
    ligand_tokenizer = SmilesTokenizer.build(["CCO", "c1ccccc1N", "CC(=O)Cl"])
    meta = {"protein_vocab_size": 25, "ligand_tokenizer": ligand_tokenizer.to_dict()}
    shapes = conversion.abstract_params(config, meta)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape, np.float32), shapes)
    weights = conversion.Weights(params, params, 3, config, meta)
    conversion.write_orbax(str(tmp_path / "run"), weights)
    path = conversion.export_torch(str(tmp_path / "run"), str(tmp_path / "dual.pt"))
    twin = build_dual_model(
        config.model,
        26,
        ligand_tokenizer.vocab_size + 1,
        absorb=True,
        max_lens=(config.data.max_protein_len, config.data.max_ligand_len),
    )
    twin.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])
    conversion.import_torch(path, str(tmp_path / "back"))
    back = conversion.read_orbax(str(tmp_path / "back"))
    assert_trees_equal(params, back.params)
    assert back.meta["ligand_tokenizer"] == ligand_tokenizer.to_dict()
    # the length heads travel with the rest: embed/embedding <-> embed.weight, and the
    # twin's p(L | context) is the JAX model's
    assert {"length_ligand", "length_protein"} <= set(params)
    model = conversion.model_for(config, meta)
    context = np.array([[5, 9, 12, 7, 0, 0], [6, 6, 20, 21, 22, 8]], np.int32)
    valid = np.arange(6)[None] < np.array([[4], [6]])
    for task in ("ligand_given_protein", "protein_given_ligand"):
        ids = context if task == "ligand_given_protein" else context % ligand_tokenizer.vocab_size
        want = model.apply({"params": back.params}, ids, valid, task, method="length_logits")
        with torch.no_grad():
            got = twin.length_logits(torch.as_tensor(ids).long(), torch.as_tensor(valid), task)
        want = np.asarray(want)  # standard-normal weights: logits in the hundreds
        assert np.abs(got.numpy() - want).max() / (1.0 + np.abs(want).max()) <= 1e-6


def test_dual_checkpoint_saved_before_the_length_heads_imports_without_them(tmp_path):
    from sedd_jax.data.smiles import SmilesTokenizer
    from sedd_jax.defaults import dual_base_config

    config = dual_base_config()
    config.model.hidden, config.model.n_heads, config.model.cond_dim = 32, 4, 16
    config.model.n_blocks_protein, config.model.n_blocks_ligand = 1, 1
    del config.model["length_head"], config.model["length_hidden"]  # an older run's config
    ligand_tokenizer = SmilesTokenizer.build(["CCO", "c1ccccc1N"])
    meta = {"protein_vocab_size": 25, "ligand_tokenizer": ligand_tokenizer.to_dict()}
    shapes = conversion.abstract_params(config, meta)
    assert not any(name.startswith("length_") for name in shapes)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape, np.float32), shapes)
    conversion.write_orbax(
        str(tmp_path / "run"), conversion.Weights(params, params, 2, config, meta)
    )
    path = conversion.export_torch(str(tmp_path / "run"), str(tmp_path / "old.pt"))
    conversion.import_torch(path, str(tmp_path / "back"))
    back = conversion.read_orbax(str(tmp_path / "back"))
    assert back.config.model.length_head is False  # recorded in the converted run's settings
    assert_trees_equal(params, back.params)
