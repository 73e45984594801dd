"""Schedule checks both backends make (`sedd_jax.diffusion.noise`)."""

from __future__ import annotations


def absorbing_schedule_warning(noise) -> str | None:
    """A message when the absorbing chain does not reach (near) full masking at t = 1.

    Sampling starts from the all-mask state, so a schedule with P(mask | t=1) < 0.99 trains
    on inputs unlike the ones the sampler starts from (the reference's cosine schedule,
    defect B2).
    """
    p = noise.mask_probability_at_one()
    if p >= 0.99:
        return None
    return (
        f"noise schedule {noise} masks only a fraction P(mask | t=1) = {p:.2f} of tokens "
        "(< 0.99), but sampling starts from the all-mask state: training never sees the "
        "sampler's starting point. Prefer noise.type='loglinear'."
    )


def warn_schedule(graph, noise, warnings: list[str]) -> None:
    """Appends `absorbing_schedule_warning` to `warnings` for an absorbing graph."""
    if graph.absorb and (message := absorbing_schedule_warning(noise)):
        warnings.append(message)
