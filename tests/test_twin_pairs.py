"""The torch backend trains protein–ligand pairs: the dual curriculum follows its schedule
(twin trainer's log and the JAX pair objective), and the twin's pair checkpoint is read,
scored and sampled by sedd_jax with no manual conversion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.common.tasks import TaskMixture
from sedd_jax.diffusion import keys
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.joint import PairGraphs
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models.dual import DualTrackSEDD, init_dual_params
from sedd_jax.training.tasks import pair_track_objective
from tests.helpers import run_cli, tiny_config

STEPS, PRESCHOOL, STRENGTH, EPS = 4, 4, 3.0, 1e-3


def tiny_pair_config():
    overrides = {
        "backend": "torch",
        "seed": 3,
        "data.max_protein_len": 32,
        "data.max_ligand_len": 48,
        "data.max_pairs": 300,
        "training.batch_size": 8,
        "training.n_steps": STEPS,
        "training.log_every": 1,
        "training.eval_every": 1000,
        "training.checkpoint_every": 1000,
        "eval.batch_size": 16,
        "eval.time_samples": 1,
        "eval.max_batches": 1,
        "sampling.steps": 4,
        "sampling.num_samples": 2,
        "curriculum.type": "time_bias",
        "curriculum.ramp": "linear",
        "curriculum.preschool_steps": PRESCHOOL,
        "curriculum.bias_strength": STRENGTH,
    }
    return tiny_config("dual", **overrides)


def biased_mean(u, step):
    """The schedule: mean of eps + (1 - eps) u^(1 + (1 - p) strength), p = step / preschool."""
    exponent = 1.0 + (1.0 - min(step / PRESCHOOL, 1.0)) * STRENGTH
    return float(np.mean(EPS + (1.0 - EPS) * np.asarray(u, np.float64) ** exponent))


@pytest.fixture(scope="module")
def twin_pair_run(tmp_path_factory):
    from sedd_torch.training.loop import train_and_evaluate

    torch.set_num_threads(1)
    workdir = str(tmp_path_factory.mktemp("twin_pairs"))
    config = tiny_pair_config()
    return config, workdir, train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_twin_pair_run_logs_the_time_bias_schedule(twin_pair_run):
    from sedd_torch.training.step import step_generator

    config, workdir, summary = twin_pair_run
    assert summary["step"] == STEPS
    rows = {r["step"]: r for r in read_metrics(workdir) if "train/mean_t" in r}
    assert sorted(rows) == list(range(1, STEPS + 1))
    for done, row in rows.items():
        step = done - 1  # the curriculum reads the step before the update
        assert row["train/curriculum_progress"] == pytest.approx(step / PRESCHOOL)
        generator = step_generator(config.seed, step)
        torch.rand(config.training.batch_size, generator=generator)  # the task draws
        u = torch.rand(config.training.batch_size, generator=generator)  # the time draws
        assert row["train/mean_t"] == pytest.approx(biased_mean(u.numpy(), step), rel=1e-5)
        assert np.isfinite(row["train/loss_protein"]) and np.isfinite(row["train/loss_ligand"])
    baselines = next(r for r in read_metrics(workdir) if "val/loss_unigram_ligand" in r)
    assert baselines["val/loss_unigram_protein"] > 0 and baselines["val/loss_unigram_ligand"] > 0


@pytest.mark.slow
def test_jax_pair_objective_follows_the_time_bias_schedule():
    model = DualTrackSEDD(
        protein_vocab=26, ligand_vocab=30, hidden=32, n_blocks_protein=1, n_blocks_ligand=1,
        n_heads=2, cond_dim=16, dropout=0.0,
    )  # fmt: skip
    params = init_dual_params(model, jax.random.key(0))
    graphs = PairGraphs(Absorbing(25), Absorbing(29))
    mixture = TaskMixture.parse({"joint": 0.5, "ligand_given_protein": 0.5})
    objective, step_metrics = pair_track_objective(
        model, graphs, LogLinearNoise(), mixture, EPS, tiny_pair_config().curriculum
    )
    size, rng = 16, np.random.default_rng(0)
    batch = {
        "protein": jnp.asarray(rng.integers(0, 25, (size, 8)), jnp.int32),
        "protein_valid": jnp.ones((size, 8), bool),
        "ligand": jnp.asarray(rng.integers(0, 29, (size, 6)), jnp.int32),
        "ligand_valid": jnp.ones((size, 6), bool),
        "example_id": jnp.arange(size, dtype=jnp.int32),
    }
    row_keys = keys.example_keys(jax.random.key(5), batch["example_id"])
    _, loss_key = keys.split(row_keys)
    time_key, _ = keys.split(loss_key)
    u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (1,))[0])(time_key))
    dropout_key = jax.random.key(1)

    @jax.jit
    def metrics_at(step):  # the step is traced, as in `train_step`
        return step_metrics(objective(params, batch, row_keys, step, dropout_key)[2], step)

    means = []
    for step in (0, 2, 4, 9):
        metrics = metrics_at(jnp.int32(step))
        assert float(metrics["curriculum_progress"]) == pytest.approx(min(step / PRESCHOOL, 1))
        assert float(metrics["mean_t"]) == pytest.approx(biased_mean(u, step), rel=1e-5)
        means.append(float(metrics["mean_t"]))
    assert means == sorted(means) and means[-1] == means[-2]  # plain sampler from p = 1


@pytest.mark.slow
def test_twin_pair_checkpoint_is_the_jax_model(twin_pair_run):
    """open_run converts the twin's .pt on the fly: the JAX model with those EMA weights
    gives the twin's log-scores."""
    from sedd_jax.conversion import config_from_dict, model_for
    from sedd_jax.data.smiles import SmilesTokenizer
    from sedd_jax.runs import open_run
    from sedd_torch.diffusion.graphs import get_graph
    from sedd_torch.models.dual import build_dual_model
    from sedd_torch.training import checkpoint as torch_checkpoint

    config, workdir, _ = twin_pair_run
    run = open_run(workdir)
    params, meta, step = run.params(), run.meta, run.step
    assert step == STEPS and meta["config"]["backend"] == "torch"
    payload = torch.load(torch_checkpoint.checkpoint_path(workdir, STEPS), weights_only=True)
    ligand_graph = get_graph(
        config.graph, SmilesTokenizer.from_dict(meta["ligand_tokenizer"]).vocab_size
    )
    max_lens = (config.data.max_protein_len, config.data.max_ligand_len)
    twin = build_dual_model(config.model, 26, ligand_graph.dim, True, max_lens).eval()
    twin.load_state_dict(payload["model_state_dict"])
    shadows = payload["ema_state_dict"]["shadow_params"]
    with torch.no_grad():
        for p, shadow in zip(twin.parameters(), shadows, strict=True):
            p.copy_(shadow)
    jax_model = model_for(config_from_dict(meta["config"]), meta)
    rng = np.random.default_rng(1)
    protein = rng.integers(0, 26, (2, 32)).astype(np.int32)
    ligand = rng.integers(0, ligand_graph.dim, (2, 48)).astype(np.int32)
    pv, lv = np.ones((2, 32), bool), np.arange(48)[None] < np.array([[48], [20]])
    sigma = np.array([0.3, 2.0], np.float32)
    jp, jl = jax_model.apply({"params": params}, protein, ligand, sigma, pv, lv, mode="joint")
    with torch.no_grad():
        tp, tl = twin(*(torch.as_tensor(a) for a in (protein, ligand)), torch.as_tensor(sigma),
                      torch.as_tensor(pv), torch.as_tensor(lv), "joint")  # fmt: skip
    for a, b in ((jp, tp), (jl, tl)):
        a, b = np.asarray(a), b.numpy()
        assert np.abs(a - b).max() / (1 + np.abs(a).max()) < 1e-5


@pytest.mark.slow
def test_sedd_jax_sample_runs_on_a_twin_pair_workdir(twin_pair_run, tmp_path):
    _, workdir, _ = twin_pair_run
    out = tmp_path / "pairs.csv"
    run = run_cli(
        "sedd_jax.sample", f"--workdir={workdir}", "--num=2", "--steps=4", f"--out={out}",
        timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = out.read_text().strip().splitlines()
    assert lines[0].split(",")[2:4] == ["sequence", "smiles"] and len(lines) == 3
