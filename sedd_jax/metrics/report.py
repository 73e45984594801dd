"""The sample-quality report: metrics of a sample file against a reference, as JSON, Markdown, PNG.

    report = build_report(kind, columns, reference)   # kind from samples.read_samples
    write_report(report, outdir)   # report.json, report.md, <track>_*.png

Keys starting with `_` hold per-sample values for the plots; they are left out of
report.json. `headline` holds the few numbers a results table quotes.
"""

from __future__ import annotations

import json
import os
import time

from sedd_jax.metrics import ligand, pairs, plots, protein

HEADLINE_KEYS = {
    "protein": (
        ("composition_kl",),
        ("length", "ks"),
        ("novelty", "max_identity_mean"),
        ("diversity", "mean_pairwise_identity"),
        ("diversity", "unique_fraction"),
        ("generated", "homopolymer_rate"),
        ("generated", "low_complexity_residue_fraction"),
        ("generated", "rep_3"),
        ("family_hits", "hit_rate"),
    ),
    "ligand": (
        ("validity",),
        ("unique@1000",),
        ("unique@10000",),
        ("novelty",),
        ("internal_diversity",),
        ("intdiv1_moses",),
        ("qed_mean",),
        ("sa_mean",),
        ("lipinski_pass_fraction",),
        ("fcd",),
    ),
    "specificity": (
        ("within_protein",),
        ("between_proteins",),
        ("matched",),
        ("mismatched",),
        ("specificity_gap",),
    ),
}


def _get(d: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def build_report(
    kind: str,
    columns: dict[str, list[str]],
    reference: dict[str, list[str]],
    *,
    protein_kwargs: dict | None = None,
    ligand_kwargs: dict | None = None,
    progress: bool = True,
) -> dict:
    """Metrics of one sample file: `tracks` (name -> metrics), `headline`, timings."""
    protein_kwargs = {"progress": progress, **(protein_kwargs or {})}
    ligand_kwargs = {"progress": progress, **(ligand_kwargs or {})}
    need = {"protein": ("proteins",), "ligand": ("smiles",), "joint": ("proteins", "smiles")}
    for part in need.get(kind, ("smiles",)):
        if not reference.get(part):
            raise ValueError(f"samples of kind {kind!r} need reference {part}; none given")
    start = time.perf_counter()
    if kind == "protein":
        tracks = {
            "protein": protein.protein_metrics(
                columns["sequence"], reference["proteins"], **protein_kwargs
            )
        }
    elif kind == "ligand":
        tracks = {
            "ligand": ligand.ligand_metrics(columns["smiles"], reference["smiles"], **ligand_kwargs)
        }
    else:
        tracks = pairs.pair_metrics(
            kind,
            columns,
            reference.get("proteins", []),
            reference["smiles"],
            protein_kwargs,
            ligand_kwargs,
        )
    headline = {
        f"{track}/{'.'.join(path)}": _get(metrics, path)
        for track, metrics in tracks.items()
        for path in HEADLINE_KEYS[track]
    }
    return {
        "kind": kind,
        "num_samples": len(next(iter(columns.values()))),
        "reference_sizes": {k: len(v) for k, v in reference.items()},
        "headline": headline,
        "tracks": tracks,
        "seconds": time.perf_counter() - start,
    }


def _public(obj):
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not str(k).startswith("_")}
    return obj


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(report: dict, plot_paths: list[str]) -> str:
    """The report as Markdown: headline table, per-track generated-vs-reference tables, plots."""
    lines = [
        f"# Sample report: {report.get('samples', '')}",
        "",
        f"kind `{report['kind']}`, {report['num_samples']} samples; reference: "
        f"{report.get('reference', '')} ({report['reference_sizes']}); "
        f"{report['seconds']:.1f} s. Definitions: docs/metrics.md.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["headline"].items()]
    for track, metrics in report["tracks"].items():
        if "generated" in metrics and "reference" in metrics:
            lines += [
                "",
                f"## {track}: generated vs reference",
                "",
                "| statistic | generated | reference |",
                "|---|---|---|",
            ]
            for key, value in metrics["generated"].items():
                if key != "composition":
                    lines.append(
                        f"| {key} | {_fmt(value)} | {_fmt(metrics['reference'].get(key))} |"
                    )
        if "properties" in metrics:
            lines += [
                "",
                f"## {track}: property distributions",
                "",
                "| property | generated mean ± std | reference mean ± std | KS | W1 |",
                "|---|---|---|---|---|",
            ]
            for name, p in metrics["properties"].items():
                lines.append(
                    f"| {name} | {_fmt(p['generated_mean'])} ± {_fmt(p['generated_std'])} | "
                    f"{_fmt(p['reference_mean'])} ± {_fmt(p['reference_std'])} | "
                    f"{_fmt(p['ks'])} | {_fmt(p['wasserstein'])} |"
                )
    if plot_paths:
        lines += ["", "## Plots", ""]
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plot_paths]
    return "\n".join(lines) + "\n"


def write_report(report: dict, outdir: str) -> dict[str, str]:
    """Writes report.json, report.md and the PNG plots under `outdir`; returns their paths."""
    os.makedirs(outdir, exist_ok=True)
    plot_paths = plots.report_plots(report["tracks"], outdir)
    public = dict(_public(report), plots=[os.path.basename(p) for p in plot_paths])
    json_path, md_path = os.path.join(outdir, "report.json"), os.path.join(outdir, "report.md")
    with open(json_path, "w") as f:
        json.dump(public, f, indent=2)
        f.write("\n")
    with open(md_path, "w") as f:
        f.write(markdown(report, plot_paths))
    return {"json": json_path, "markdown": md_path, "plots": plot_paths}
