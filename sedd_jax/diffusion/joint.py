"""Joint protein–ligand diffusion: tasks, the two-track loss, and the two-track sampler.

A pair is (protein x0 [B, Lp], ligand x0 [B, Ll]) with validity masks; each track has its
own graph (vocabulary). One time t (one sigma_bar) per pair drives both tracks. A `task`
says, per pair, which tracks are generated (corrupted, scored, sampled) and which are
visible to the network:

    task                   generated          visible
    joint                  protein, ligand    protein, ligand
    ligand_given_protein   ligand             protein (clean), ligand
    protein_given_ligand   protein            protein, ligand (clean)
    protein_only           protein            protein
    ligand_only            ligand             ligand

A clean context track is never masked, gets no loss, and is clamped during sampling; an
invisible track is hidden from the network by an all-false validity row (cross-attention
to it is then exactly zero, see `models/dual.py`). A `TaskMixture` draws the task per
pair inside the jitted step: only masks change between tasks, never the program.

A `DualScoreFn(protein_t, ligand_t, sigma [B], protein_valid, ligand_valid, mode) ->
(protein log-scores | None, ligand log-scores | None)` stands for the network; `mode` is
a task name (`DualTrackSEDD` modes), `joint` serving any mixture. Bind parameters with
`functools.partial(model.apply, {"params": params})`. A `LengthFn(context [B, Lc],
context_valid [B, Lc], task) -> logits [B, max_len + 1]` stands for the length heads
(`functools.partial(model.apply, {"params": params}, method="length_logits")`).

Length term. Given the context, the generated track's length is part of what is
modelled: -log p(x_gen | ctx) = -log p(L_gen | ctx) - log p(x_gen | L_gen, ctx). With a
length fn, each `ligand_given_protein` pair adds -log p(L_ligand | clean protein) to the
ligand track's loss sum (`protein_given_ligand`: -log p(L_protein | ligand) to the
protein's), so the optimised sum is the full conditional bound in nats per sequence;
other tasks add nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sedd_jax.common.tasks import (  # noqa: F401  (re-exported: their old home)
    CONDITIONAL_TRACKS,
    TASK_ROLES,
    TASKS,
    JointLoss,
    PairGraphs,
    Roles,
    TaskMixture,
)
from sedd_jax.diffusion import keys
from sedd_jax.diffusion.catsample import race_uniform
from sedd_jax.diffusion.curriculum import sigma_multiplier
from sedd_jax.diffusion.losses import TERMS, loss_times
from sedd_jax.diffusion.sampling import (
    PREDICTORS,
    SAMPLERS,
    denoise,
    pc_sample,
    time_grid,
    transition_reshaper,
)
from sedd_jax.models.length import length_nll

DualScoreFn = Callable[..., tuple[jax.Array | None, jax.Array | None]]
LengthFn = Callable[[jax.Array, jax.Array, str], jax.Array]


def draw_tasks(key: jax.Array, mixture: TaskMixture, batch: int) -> jax.Array:
    """Task ids [B] int32 (indices into TASKS), i.i.d. from the mixture.

    `key` is one key or per-example keys [B] (`diffusion/keys.py`).
    """
    logits = jnp.log(jnp.asarray(mixture.probs, jnp.float32))

    def categorical(k, n):
        return jax.random.categorical(k, logits, shape=(n,)).astype(jnp.int32)

    return keys.draw(categorical, key, batch)


def task_roles(task_ids: jax.Array) -> Roles:
    """Roles of each pair from its task id [B]."""
    table = jnp.asarray(list(TASK_ROLES.values()), dtype=bool)  # [tasks, 4]
    return Roles(*table[task_ids].T)


def joint_per_token_loss(
    score_fn: DualScoreFn,
    graphs: PairGraphs,
    noise,
    batch: dict,
    t: jax.Array,
    task_ids: jax.Array,
    key: jax.Array,
    mode: str = "joint",
    *,
    sigma_scale: jax.Array | float = 1.0,
    loss_type: str = "score_entropy",
):
    """dsigma'(t_b) * score entropy per token, for given times t [B] and tasks [B]
    (`loss_type="masked_ce"`: the network gives mean logits and each token's term is
    MDLM's masked cross-entropy, `losses.masked_ce_terms`; absorbing graphs only).

    batch: protein, protein_valid [B, Lp]; ligand, ligand_valid [B, Ll]. Generated tracks
    are corrupted with `protein_key, ligand_key = jax.random.split(key)` exactly as
    `graph.sample_transition` does for a single track (per-example keys [B] split and
    corrupt row by row, `diffusion/keys.py`); context tracks stay clean.
    `mode` is the network mode: `joint` serves any tasks; a single task's own mode
    skips the computation it does not need. sigma' = sigma_scale * sigma_bar(t) and
    dsigma' = sigma_scale * dsigma(t), as in `losses.per_token_loss` (curriculum).

    Returns (protein_loss [B, Lp], ligand_loss [B, Ll], protein_scored [B, Lp],
    ligand_scored [B, Ll]); *_scored are the valid tokens of generated tracks.
    """
    roles = task_roles(task_ids)
    protein_key, ligand_key = keys.split(key)
    sigma, dsigma = noise(t)
    sigma, dsigma = sigma_scale * sigma, sigma_scale * dsigma
    p_valid, l_valid = batch["protein_valid"], batch["ligand_valid"]
    p_scored = p_valid & roles.protein_generated[:, None]
    l_scored = l_valid & roles.ligand_generated[:, None]
    p_t = keys.rowwise(
        graphs.protein.sample_transition, protein_key, batch["protein"], sigma, p_scored
    )
    l_t = keys.rowwise(
        graphs.ligand.sample_transition, ligand_key, batch["ligand"], sigma, l_scored
    )
    p_seen = p_valid & roles.protein_visible[:, None]
    l_seen = l_valid & roles.ligand_visible[:, None]
    p_score, l_score = score_fn(p_t, l_t, sigma, p_seen, l_seen, mode)
    terms = TERMS[loss_type]

    def track_loss(graph, score, x_t, x0, scored):
        if score is None:
            return jnp.zeros(x0.shape, jnp.float32)
        return terms(score, graph, sigma, dsigma, x_t, x0, scored)

    p_loss = track_loss(graphs.protein, p_score, p_t, batch["protein"], p_scored)
    l_loss = track_loss(graphs.ligand, l_score, l_t, batch["ligand"], l_scored)
    return p_loss, l_loss, p_scored, l_scored


def conditional_length_nll(length_fn: LengthFn, batch: dict, task_ids: jax.Array) -> dict:
    """{generated track: -log p(L | clean context) [B]} on the rows of its conditional
    task (`CONDITIONAL_TRACKS`) with L >= 1 valid tokens (filler rows of a padded
    evaluation batch have none), 0 on every other row."""
    out = {}
    for task, (context, generated) in CONDITIONAL_TRACKS.items():
        lengths = batch[f"{generated}_valid"].sum(axis=-1)
        nll = length_nll(length_fn(batch[context], batch[f"{context}_valid"], task), lengths)
        out[generated] = jnp.where((task_ids == TASKS.index(task)) & (lengths > 0), nll, 0.0)
    return out


class PairLosses(NamedTuple):
    """One draw of the pair loss: per-token losses of each track (0 where not scored),
    the scored tokens (valid tokens of generated tracks), per pair its time and task, and
    with a length fn each track's length term [B] (0 off its conditional task)."""

    protein: jax.Array  # [B, Lp]
    ligand: jax.Array  # [B, Ll]
    protein_scored: jax.Array  # [B, Lp] bool
    ligand_scored: jax.Array  # [B, Ll] bool
    t: jax.Array  # [B]
    task_ids: jax.Array  # [B] int32
    protein_length: jax.Array | None = None  # [B] -log p(L_protein | ligand)
    ligand_length: jax.Array | None = None  # [B] -log p(L_ligand | protein)

    def sums(self) -> JointLoss:
        """Per-track sums (length terms included) and token counts, to average over
        micro-batches and devices."""
        protein_sum, ligand_sum = self.protein.sum(), self.ligand.sum()
        if self.protein_length is not None:
            protein_sum = protein_sum + self.protein_length.sum()
            ligand_sum = ligand_sum + self.ligand_length.sum()
        return JointLoss(
            protein_sum,
            self.protein_scored.sum().astype(jnp.float32),
            ligand_sum,
            self.ligand_scored.sum().astype(jnp.float32),
        )

    def length_sums(self) -> dict:
        """Length-term sums and the number of rows that carry them, per generated track:
        {"length_<track>_sum", "length_<track>_rows"} (empty without a length fn)."""
        if self.protein_length is None:
            return {}
        out = {}
        for task, (_, track) in CONDITIONAL_TRACKS.items():
            scored = getattr(self, f"{track}_scored").any(axis=-1)
            rows = (self.task_ids == TASKS.index(task)) & scored
            out[f"length_{track}_sum"] = getattr(self, f"{track}_length").sum()
            out[f"length_{track}_rows"] = rows.sum().astype(jnp.float32)
        return out


def joint_score_entropy_loss(
    score_fn: DualScoreFn,
    graphs: PairGraphs,
    noise,
    batch: dict,
    key: jax.Array,
    tasks: TaskMixture | jax.Array,
    sampling_eps: float = 1e-3,
    *,
    mode: str | None = None,
    step: jax.Array | int = 0,
    curriculum=None,
    length_fn: LengthFn | None = None,
    t: jax.Array | None = None,
    loss_type: str = "score_entropy",
) -> PairLosses:
    """The pair loss of training and evaluation: one time and one task per pair.

    `tasks` is a `TaskMixture` (each pair's task drawn from it) or task ids [B] (fixed,
    e.g. one task per evaluation). Keys (`key`: one key or per-example keys [B]): with a
    mixture `task_key, key = split(key)` and the tasks come from `task_key`; then
    `time_key, noise_key = split(key)` give the (curriculum) times and the corruption
    (`protein_key, ligand_key = split(noise_key)`, `joint_per_token_loss`). With
    `curriculum` at `step` the times are biased and sigma is scaled for both tracks, as
    in `losses.score_entropy_loss`. `mode`: the network mode (default: the mixture's, or
    `joint` for given ids). `length_fn` (runs with `model.length_head`): the conditional
    tasks' length terms (`conditional_length_nll`, no random draw). Given times `t` [B]
    (e.g. `losses.antithetic_times`) replace the drawn ones; the corruption key is the same
    either way. `loss_type`: "score_entropy" or "masked_ce" (mean logits, MDLM's term; see
    `joint_per_token_loss`). The optimised loss is `sums().total_sum / sums().total_count`.
    """
    size = batch["protein"].shape[0]
    if isinstance(tasks, TaskMixture):
        task_key, key = keys.split(key)
        task_ids = draw_tasks(task_key, tasks, size)
        mode = mode or tasks.mode
    else:
        task_ids = jnp.asarray(tasks, jnp.int32)
        mode = mode or "joint"
    drawn, noise_key = loss_times(key, size, sampling_eps, step, curriculum)
    t = drawn if t is None else t
    p_loss, l_loss, p_scored, l_scored = joint_per_token_loss(
        score_fn,
        graphs,
        noise,
        batch,
        t,
        task_ids,
        noise_key,
        mode,
        sigma_scale=sigma_multiplier(step, curriculum),
        loss_type=loss_type,
    )
    out = PairLosses(p_loss, l_loss, p_scored, l_scored, t, task_ids)
    if length_fn is None:
        return out
    lengths = conditional_length_nll(length_fn, batch, task_ids)
    return out._replace(protein_length=lengths["protein"], ligand_length=lengths["ligand"])


def sample_pairs(
    score_fn: DualScoreFn,
    graphs: PairGraphs,
    noise,
    protein: jax.Array | None,
    ligand: jax.Array | None,
    protein_valid: jax.Array | None,
    ligand_valid: jax.Array | None,
    key: jax.Array | None = None,
    *,
    task: str = "joint",
    steps: int,
    predictor: str = "euler",
    eps: float = 1e-5,
    denoise_last: bool = True,
    protein_clamp: jax.Array | None = None,
    ligand_clamp: jax.Array | None = None,
    uniforms: tuple[jax.Array | None, jax.Array | None] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    forbidden: tuple[jax.Array | None, jax.Array | None] = (None, None),
) -> tuple[jax.Array | None, jax.Array | None]:
    """Reverse process of both tracks, one network call per step: (protein, ligand).

    protein/ligand [B, L] hold the context tokens and pads; every valid position of a
    generated track that is not clamped starts from the graph's limit (the mask id for
    absorbing graphs; drawn with `jax.random.split(jax.random.fold_in(key, steps + 1))`),
    whatever it holds. Pads, `*_clamp` [B, L] positions (prompts) and the whole context
    track keep their given tokens at every step. A track the task does not use may be
    None and is returned as given. Each generated track takes `predictor` (one track at a
    time, as in `sampling.pc_sample`) on the shared score, then the final denoiser, which
    leaves no mask id. Uniforms: at step i, `jax.random.split(jax.random.fold_in(key, i))`
    gives the protein and ligand keys, or `uniforms` = (protein [steps + 1, B, Lp, Vp] |
    None, ligand [steps + 1, B, Ll, Vl] | None) for parity runs. `temperature`, `top_p`
    and `forbidden` = (protein [Vp] bool | None, ligand [Vl] bool | None) reshape every
    draw of each generated track exactly as `sampling.pc_sample` does. Wrap in jax.jit
    with the other keyword arguments static.
    """
    if task not in TASK_ROLES:
        raise ValueError(f"task={task!r}; choose one of {list(TASKS)}")
    if predictor not in PREDICTORS and predictor not in SAMPLERS:
        choices = sorted(PREDICTORS) + list(SAMPLERS)
        raise ValueError(f"sampling.predictor={predictor!r}; choose one of {choices}")
    if key is None and uniforms is None:
        raise ValueError("sample_pairs needs a key or explicit uniforms")
    if predictor in SAMPLERS:
        return _one_track_sampler(
            score_fn,
            graphs,
            noise,
            (protein, ligand),
            (protein_valid, ligand_valid),
            (protein_clamp, ligand_clamp),
            key,
            task=task,
            steps=steps,
            predictor=predictor,
            eps=eps,
            denoise_last=denoise_last,
            temperature=temperature,
            top_p=top_p,
            forbidden=forbidden,
        )
    step_fn = PREDICTORS[predictor]
    reshapes = tuple(transition_reshaper(temperature, top_p, f) for f in forbidden)
    gen_p, gen_l, _, _ = TASK_ROLES[task]
    ts = time_grid(steps, eps)
    dt = (1.0 - eps) / steps

    limit_keys = (
        (None, None) if key is None else jax.random.split(jax.random.fold_in(key, steps + 1))
    )

    def start(graph, x, valid, clamp, generated, limit_key):
        if not generated:
            return x, None
        if limit_key is None and not graph.absorb:
            raise ValueError("the uniform graph starts from random tokens: pass a key")
        keep = ~valid if clamp is None else ~valid | clamp
        return jnp.where(keep, x, graph.sample_limit(limit_key, x.shape)), keep

    p_start, p_keep = start(
        graphs.protein, protein, protein_valid, protein_clamp, gen_p, limit_keys[0]
    )
    l_start, l_keep = start(graphs.ligand, ligand, ligand_valid, ligand_clamp, gen_l, limit_keys[1])
    inits, keeps = (protein, ligand), (p_keep, l_keep)
    size = (protein if gen_p else ligand).shape[0]

    def draw(i):
        if uniforms is not None:
            return tuple(
                u[i] if k is not None else None for u, k in zip(uniforms, keeps, strict=True)
            )
        step_keys = jax.random.split(jax.random.fold_in(key, i))
        return tuple(
            None if k is None else race_uniform(sk, x.shape + (g.dim,))
            for sk, x, k, g in zip(step_keys, inits, keeps, graphs, strict=True)
        )

    def network(state, t):
        sigma, _ = noise(jnp.full((size,), t, jnp.float32))
        return score_fn(*state, sigma, protein_valid, ligand_valid, task)

    def advance(move, state, scores, draws):
        """move(log_score_fn, graph, x, u, reshape) on each generated track, then clamp."""
        out = []
        tracks = zip(graphs, state, inits, keeps, scores, draws, reshapes, strict=True)
        for graph, x, x_init, keep, score, u, reshape in tracks:
            if keep is not None:
                x = jnp.where(keep, x_init, move(lambda *_, s=score: s, graph, x, u, reshape))
            out.append(x)
        return tuple(out)

    def body(state, i):
        def move(fn, graph, x, u, reshape):
            return step_fn(fn, graph, noise, x, ts[i], dt, u, reshape)

        return advance(move, state, network(state, ts[i]), draw(i)), None

    state, _ = jax.lax.scan(body, (p_start, l_start), jnp.arange(steps))
    if denoise_last:

        def final(fn, graph, x, u, reshape):
            return denoise(fn, graph, noise, x, ts[-1], u, reshape)

        state = advance(final, state, network(state, ts[-1]), draw(steps))
    return state


def one_generated_track(task: str, predictor: str) -> int:
    """The index (0 protein, 1 ligand) of the one track `task` generates, for a one-track
    sampler (`SAMPLERS`); joint generation is refused with a ValueError."""
    gen_p, gen_l, _, _ = TASK_ROLES[task]
    if gen_p and gen_l:
        raise ValueError(
            f"sampling.predictor={predictor!r} generates one track; task={task!r} generates "
            f"both: use one of {sorted(PREDICTORS)}"
        )
    return 0 if gen_p else 1


def _one_track_sampler(
    score_fn, graphs, noise, tracks, valids, clamps, key, *, task, forbidden, **settings
):
    """`sampling.pc_sample`'s own-loop samplers (`SAMPLERS`: cached, first_hitting) for a
    task that generates one track: the network is a function of that track alone (the
    other is fixed context, or absent), so the single-track sampler runs on it unchanged,
    with its keys (`pc_sample`). Joint generation moves both tracks at one shared time,
    which these samplers do not model: refused."""
    i = one_generated_track(task, settings["predictor"])
    protein_valid, ligand_valid = valids
    graph = graphs[i]

    def log_score_fn(x, sigma):
        state = tuple(x if j == i else tracks[j] for j in range(2))
        return score_fn(*state, sigma, protein_valid, ligand_valid, task)[i]

    clamp = ~valids[i] if clamps[i] is None else ~valids[i] | clamps[i]
    x = pc_sample(
        log_score_fn,
        graph,
        noise,
        tracks[i],
        key,
        clamp=clamp,
        forbidden=forbidden[i],
        **settings,
    )
    return tuple(x if j == i else tracks[j] for j in range(2))
