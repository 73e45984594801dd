"""The two-track reverse process of joint protein–ligand diffusion (`sample_pairs`): one
network call per step moves every generated track of a task (`diffusion/joint.py` has the
tasks, the roles of the tracks and the `DualScoreFn` convention); one-track samplers
(`sampling.SAMPLERS`: cached, first_hitting, ...) run on tasks that generate one track.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.common.tasks import TASK_ROLES, TASKS, PairGraphs
from sedd_jax.diffusion.catsample import race_uniform
from sedd_jax.diffusion.joint import DualScoreFn
from sedd_jax.diffusion.sampling import (
    PREDICTORS,
    SAMPLERS,
    denoise,
    pc_sample,
    time_grid,
    transition_reshaper,
)


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
