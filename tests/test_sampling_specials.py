"""Special ids are never drawn, and pair sampling applies temperature and top_p.

The networks are exact unigram oracles (`diffusion/oracles.py`) behind the model
interface, with much of the mass on `<unk>` and the other special ids.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from ml_collections import ConfigDict

from sedd_jax.common.generation import forbidden_ids, special_ids, tokenizer_forbidden
from sedd_jax.common.tasks import PairGraphs
from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.sampling import pc_sample
from sedd_jax.training.generation import generate, make_pair_sampler, make_sampler
from sedd_torch.diffusion import graphs as torch_graphs
from sedd_torch.diffusion import noise as torch_noise
from sedd_torch.diffusion import sampling as torch_sampling
from sedd_torch.diffusion.catsample import generator_rand

TOK = ProteinTokenizer(25)
SPECIALS = np.array(special_ids(TOK))
# half the mass on <unk>, 0.1 on the other specials, the rest on the residues
P = np.full(25, 0.3 / 20)
P[:5] = [0.04, 0.03, 0.02, 0.5, 0.01]
P[5], P[6] = 0.075, 0.055  # residues A, C; the 18 others 0.015 each (sum 1)
NOISE = LogLinearNoise(1e-3)


class Oracle:
    """A single-track 'model': model.apply(variables, x, sigma, valid) -> log-scores."""

    def __init__(self, graph, p=P):
        self.fn = unigram_log_score_fn(jnp.log(jnp.asarray(p)), graph)

    def apply(self, variables, x, sigma, valid):
        return self.fn(x, sigma)


class PairOracle:
    """A dual-track 'model' with unigram oracles on both tracks."""

    def __init__(self, graphs, p_protein, p_ligand):
        self.fns = [
            unigram_log_score_fn(jnp.log(jnp.asarray(p)), g)
            for g, p in zip(graphs, (p_protein, p_ligand), strict=True)
        ]

    def apply(self, variables, protein, ligand, sigma, protein_valid, ligand_valid, mode):
        return self.fns[0](protein, sigma), self.fns[1](ligand, sigma)


def test_special_ids_of_proteins_and_their_mask():
    assert special_ids(TOK) == (0, 1, 2, 3, 4)
    assert special_ids(ProteinTokenizer(36)) == (0, 1, 2, 3, 4, *range(25, 36))
    assert tokenizer_forbidden(Absorbing(25), TOK).tolist() == [True] * 5 + [False] * 21
    with pytest.raises(ValueError, match="mask id 25"):
        forbidden_ids(26, [3, 25], mask_id=25)


@pytest.mark.parametrize("graph", [Absorbing(25), Uniform(25)], ids=["absorb", "uniform"])
@pytest.mark.parametrize("predictor", ["euler", "analytic"])
def test_special_ids_are_never_drawn(graph, predictor):
    fn = unigram_log_score_fn(jnp.log(jnp.asarray(P)), graph)
    x = jnp.zeros((32, 64), jnp.int32)
    forbidden = jnp.asarray(tokenizer_forbidden(graph, TOK))

    def run(forbid):
        return np.asarray(
            pc_sample(
                fn,
                graph,
                NOISE,
                x,
                jax.random.key(1),
                steps=16,
                predictor=predictor,
                forbidden=forbid,
            )
        )

    plain, restricted = run(None), run(forbidden)
    assert (plain == TOK.unk_id).mean() > 0.3  # the oracle wants <unk>
    assert not np.isin(restricted, SPECIALS).any()
    if graph.absorb:  # the residues keep their relative odds: A 0.075, the 18 last 0.015
        share_a = (restricted == 5).mean() / (restricted >= 7).mean() * 18
        assert 3.5 < share_a < 6.5


def test_the_twin_never_draws_special_ids():
    graph = torch_graphs.Absorbing(25)
    fn = unigram_log_score_fn(jnp.log(jnp.asarray(P)), Absorbing(25))

    def log_score_fn(x, sigma):
        return torch.from_numpy(np.array(fn(jnp.asarray(x.numpy()), jnp.asarray(sigma.numpy()))))

    x = torch.full((16, 48), 25, dtype=torch.long)
    rand = generator_rand(torch.Generator().manual_seed(0))
    out = torch_sampling.pc_sample(
        log_score_fn,
        graph,
        torch_noise.LogLinearNoise(1e-3),
        x,
        rand,
        steps=12,
        forbidden=torch.from_numpy(tokenizer_forbidden(graph, TOK)),
    ).numpy()
    assert not np.isin(out, SPECIALS).any() and not (out == 25).any()


def test_generate_removes_the_tokenizer_specials_by_itself():
    graph = Absorbing(25)
    sc = ConfigDict({"steps": 12, "predictor": "euler", "eps": 1e-5, "denoise": True})
    sampler = make_sampler(Oracle(graph), graph, NOISE, sc)
    tokens, valid = generate(
        sampler, {}, graph, TOK, num=16, max_len=40, length=40, length_dist=None, seed=0
    )
    assert valid.all() and not np.isin(tokens, SPECIALS).any()


def _pair_draw(temperature=1.0, top_p=1.0, forbidden=(None, None)):
    graphs = PairGraphs(Absorbing(25), Absorbing(8))
    p_ligand = np.array([0.05, 0.05, 0.4, 0.3, 0.1, 0.05, 0.03, 0.02])
    sc = ConfigDict(
        {
            "steps": 16,
            "predictor": "euler",
            "eps": 1e-5,
            "denoise": True,
            "temperature": temperature,
            "top_p": top_p,
        }
    )
    sampler = make_pair_sampler(PairOracle(graphs, P, p_ligand), graphs, NOISE, sc, "joint")
    protein = jnp.full((16, 32), 25, jnp.int32)
    ligand = jnp.full((16, 24), 8, jnp.int32)
    valid_p, valid_l = jnp.ones((16, 32), bool), jnp.ones((16, 24), bool)
    p, l = sampler({}, protein, ligand, valid_p, valid_l, jax.random.key(2), forbidden)
    return np.asarray(p), np.asarray(l)


def test_pair_sampling_at_low_temperature_draws_the_argmax_on_both_tracks():
    p, l = _pair_draw(temperature=0.02)
    assert (p == TOK.unk_id).all() and (l == 2).all()
    p, l = _pair_draw()
    assert len(np.unique(p)) > 10 and len(np.unique(l)) > 4  # at 1 the draws spread


def test_pair_sampling_top_p_keeps_only_the_nucleus_on_both_tracks():
    p, l = _pair_draw(top_p=0.6)
    assert set(np.unique(p)) == {TOK.unk_id, 5, 6}  # 0.5 + 0.075 + 0.055 >= 0.6
    assert set(np.unique(l)) == {2, 3}  # 0.4 + 0.3


def test_pair_sampling_never_draws_forbidden_ids():
    forbidden = (tokenizer_forbidden(Absorbing(25), TOK), forbidden_ids(9, [0, 1], 8))
    p, l = _pair_draw(forbidden=tuple(jnp.asarray(f) for f in forbidden))
    assert not np.isin(p, SPECIALS).any() and not np.isin(l, [0, 1, 8]).any()
    p, l = _pair_draw(temperature=0.02, forbidden=tuple(jnp.asarray(f) for f in forbidden))
    assert (p == 5).all() and (l == 2).all()  # the argmax among the allowed ids
