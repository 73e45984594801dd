"""PNG plots of a report: generated vs reference (matplotlib, Agg backend)."""

from __future__ import annotations

import os

import numpy as np

from sedd_jax.metrics.protein import STANDARD


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def composition_bars(gen: dict, ref: dict, path: str) -> str:
    """Side-by-side bars of the 20 residue frequencies."""
    plt = _pyplot()
    x = np.arange(len(STANDARD))
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(x - 0.2, [ref.get(a, 0) for a in STANDARD], 0.4, label="reference", color="C0")
    ax.bar(x + 0.2, [gen.get(a, 0) for a in STANDARD], 0.4, label="generated", color="C1")
    ax.set_xticks(x, list(STANDARD))
    ax.set_ylabel("frequency")
    ax.set_title("amino-acid composition")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def histograms(panels: dict[str, tuple[list, list]], path: str, title: str) -> str:
    """One density histogram per panel, generated over reference, on shared bins.

    The bins span the central 99 % of both samples; values outside fall in the end bins.
    """
    plt = _pyplot()
    n = len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (name, (gen, ref)) in zip(axes.ravel(), panels.items(), strict=False):
        values = np.concatenate([np.asarray(gen, float), np.asarray(ref, float)])
        if len(values):
            lo, hi = np.percentile(values, [0.5, 99.5])  # outliers go into the end bins
            bins = np.histogram_bin_edges(values, bins=30, range=(lo, hi) if hi > lo else None)
            for data, label, color in ((ref, "reference", "C0"), (gen, "generated", "C1")):
                if len(data):
                    clipped = np.clip(np.asarray(data, float), bins[0], bins[-1])
                    ax.hist(clipped, bins=bins, density=True, alpha=0.5, label=label, color=color)
        ax.set_title(name)
        ax.legend(fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report_plots(tracks: dict, outdir: str) -> list[str]:
    """All plots of a report's tracks (`tracks`: name -> metrics), returns their paths."""
    paths = []
    for name, metrics in tracks.items():
        if "composition_kl" in metrics:  # a protein track
            gen, ref = metrics["generated"], metrics["reference"]
            if gen["composition"] and ref["composition"]:
                paths.append(
                    composition_bars(
                        gen["composition"],
                        ref["composition"],
                        os.path.join(outdir, f"{name}_composition.png"),
                    )
                )
            values = metrics["_values"]
            panels = {
                "length (residues)": (values["generated_lengths"], values["reference_lengths"]),
                "max identity to reference": (values["max_identity"], []),
            }
            paths.append(histograms(panels, os.path.join(outdir, f"{name}_lengths.png"), name))
        elif "_property_values" in metrics:  # a ligand track
            values = metrics["_property_values"]
            panels = {
                k: (values["generated"][k], values["reference"][k]) for k in values["generated"]
            }
            paths.append(histograms(panels, os.path.join(outdir, f"{name}_properties.png"), name))
    return paths
