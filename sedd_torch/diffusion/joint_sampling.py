"""The two-track reverse process (twin of sedd_jax/diffusion/joint_sampling.py): draws
come from `rand` in sedd_jax's key order, or as explicit uniforms for parity runs; the
`DualScoreFn` convention is `diffusion/joint.py`'s.
"""

from __future__ import annotations

import torch

from sedd_jax.common.tasks import TASK_ROLES, TASKS
from sedd_torch.diffusion.catsample import race_uniform
from sedd_torch.diffusion.sampling import PREDICTORS, denoise, time_grid, transition_reshaper


@torch.no_grad()
def sample_pairs(
    score_fn,
    graphs,
    noise,
    protein,
    ligand,
    protein_valid,
    ligand_valid,
    rand=None,
    *,
    task: str = "joint",
    steps: int,
    predictor: str = "euler",
    eps: float = 1e-5,
    denoise_last: bool = True,
    protein_clamp=None,
    ligand_clamp=None,
    uniforms=None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    forbidden=(None, None),
):
    """Reverse process of both tracks, one network call per step: (protein, ligand).

    As sedd_jax: generated tracks start from their graph's limit at valid, unclamped
    positions; pads, clamps and context tracks keep their tokens; `uniforms` =
    (protein [steps + 1, B, Lp, Vp] | None, ligand [...] | None) replaces `rand`;
    `temperature`, `top_p` and `forbidden` = (protein [Vp] bool | None, ligand | None)
    reshape every draw of each generated track.
    """
    if task not in TASK_ROLES:
        raise ValueError(f"task={task!r}; choose one of {list(TASKS)}")
    if predictor not in PREDICTORS:
        raise ValueError(f"sampling.predictor={predictor!r}; choose one of {sorted(PREDICTORS)}")
    if rand is None and uniforms is None:
        raise ValueError("sample_pairs needs rand or explicit uniforms")
    step_fn = PREDICTORS[predictor]
    reshapes = tuple(transition_reshaper(temperature, top_p, f) for f in forbidden)
    gen_p, gen_l, _, _ = TASK_ROLES[task]
    ts = time_grid(steps, eps)
    dt = (1.0 - eps) / steps

    def start(graph, x, valid, clamp, generated):
        if not generated:
            return x, None
        if rand is None and not graph.absorb:
            raise ValueError("the uniform graph starts from random tokens: pass rand")
        keep = ~valid if clamp is None else ~valid | clamp
        return torch.where(keep, x, graph.sample_limit(rand, x.shape, x.device)), keep

    p_start, p_keep = start(graphs.protein, protein, protein_valid, protein_clamp, gen_p)
    l_start, l_keep = start(graphs.ligand, ligand, ligand_valid, ligand_clamp, gen_l)
    inits, keeps = (protein, ligand), (p_keep, l_keep)
    size = (protein if gen_p else ligand).shape[0]

    def draw(i):
        if uniforms is not None:
            return tuple(
                u[i] if k is not None else None for u, k in zip(uniforms, keeps, strict=True)
            )
        return tuple(
            None if k is None else race_uniform(rand, tuple(x.shape) + (g.dim,))
            for x, k, g in zip(inits, keeps, graphs, strict=True)
        )

    def network(state, t):
        device = (protein if gen_p else ligand).device
        sigma, _ = noise(torch.full((size,), float(t), dtype=torch.float32, device=device))
        return score_fn(*state, sigma, protein_valid, ligand_valid, task)

    def advance(move, state, scores, draws):
        """move(log_score_fn, graph, x, u, reshape) on each generated track, then clamp."""
        out = []
        tracks = zip(graphs, state, inits, keeps, scores, draws, reshapes, strict=True)
        for graph, x, x_init, keep, score, u, reshape in tracks:
            if keep is not None:
                x = torch.where(keep, x_init, move(lambda *_, s=score: s, graph, x, u, reshape))
            out.append(x)
        return tuple(out)

    state = (p_start, l_start)
    for i in range(steps):

        def move(fn, graph, x, u, reshape, i=i):
            return step_fn(fn, graph, noise, x, ts[i], dt, u, reshape)

        state = advance(move, state, network(state, ts[i]), draw(i))
    if denoise_last:

        def final(fn, graph, x, u, reshape):
            return denoise(fn, graph, noise, x, ts[-1], u, reshape)

        state = advance(final, state, network(state, ts[-1]), draw(steps))
    return state
