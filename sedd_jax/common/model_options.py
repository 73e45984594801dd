"""Model options both backends check alike when they build a network from `config.model`."""

from __future__ import annotations


def check_time_conditioning(time_conditioning: bool, absorb: bool) -> None:
    """A sigma-free network (`model.time_conditioning=False`) is the absorbing graph's
    (RADD: its score is a sigma-free conditional times a known factor of sigma)."""
    if not time_conditioning and not absorb:
        raise ValueError("model.time_conditioning=False needs graph.type=absorb (uniform: True)")


def shared_fields(model_config, absorb: bool) -> dict:
    """The fields every network of both backends takes from `config.model` (and the
    graph's `absorb`), with the defaults of older checkpoints' meta for keys they lack;
    sedd_jax adds its compute options (`models.sedd.shared_fields`)."""
    time_conditioning = model_config.get("time_conditioning", True)
    check_time_conditioning(time_conditioning, absorb)
    return {
        "hidden": model_config.hidden,
        "n_heads": model_config.n_heads,
        "cond_dim": model_config.cond_dim,
        "mlp_ratio": model_config.mlp_ratio,
        "dropout": model_config.dropout,
        "variant": model_config.variant,
        "scale_by_sigma": model_config.scale_by_sigma,
        "absorb": absorb,
        "dtype": model_config.dtype,
        "time_conditioning": time_conditioning,
    }
