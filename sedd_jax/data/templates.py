"""Sequence templates for infilling and motif scaffolding (numpy only).

A template is fixed residues with gaps to generate: `MKT[10]GGSGG[5-20]W` holds `MKT`,
then 10 generated residues, then `GGSGG`, then 5 to 20 generated residues (the length
drawn per sample, uniformly), then `W`. Prefix (`MKT[50]`), suffix (`[50]WGGK`),
middle (`[10]HHHHHH[10]`) and multi-segment prompts are all templates. Letters are
residue codes (upper case; anything the protein tokenizer maps to `<unk>` is an error,
since a fixed residue must be what the user asked for).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

_TOKEN = re.compile(r"\[(\d+)(?:-(\d+))?\]|([A-Za-z]+)")


class TemplateError(ValueError):
    """A template that does not parse; the message names the template and the position."""


@dataclasses.dataclass(frozen=True)
class Segment:
    """Fixed residues (`text`), or a gap of `low`..`high` generated residues."""

    text: str = ""
    low: int = 0
    high: int = 0

    @property
    def is_gap(self) -> bool:
        return not self.text


@dataclasses.dataclass(frozen=True)
class Template:
    text: str
    segments: tuple[Segment, ...]

    @property
    def min_length(self) -> int:
        return sum(s.low if s.is_gap else len(s.text) for s in self.segments)

    @property
    def max_length(self) -> int:
        return sum(s.high if s.is_gap else len(s.text) for s in self.segments)

    def draw(self, rng: np.random.Generator) -> str:
        """One layout: the fixed residues, and `?` at each generated position."""
        out = []
        for s in self.segments:
            out.append("?" * int(rng.integers(s.low, s.high + 1)) if s.is_gap else s.text)
        return "".join(out)


def parse_template(text: str, alphabet: str = "ACDEFGHIKLMNPQRSTVWY") -> Template:
    """Parses `MKT[10]GGSGG[5-20]W` into segments; `TemplateError` names the problem."""
    text = text.strip()
    segments, position = [], 0
    for match in _TOKEN.finditer(text):
        if match.start() != position:
            break
        position = match.end()
        if match.group(3):
            letters = match.group(3).upper()
            bad = sorted(set(letters) - set(alphabet))
            if bad:
                raise TemplateError(
                    f"template {text!r}: residue(s) {''.join(bad)} at position "
                    f"{match.start()} are not in the alphabet {alphabet}"
                )
            segments.append(Segment(text=letters))
        else:
            low = int(match.group(1))
            high = int(match.group(2)) if match.group(2) is not None else low
            if high < low:
                raise TemplateError(f"template {text!r}: gap [{low}-{high}] has high < low")
            if high > 0:
                segments.append(Segment(low=low, high=high))
    if position != len(text):
        raise TemplateError(
            f"template {text!r}: cannot parse {text[position : position + 10]!r} at position "
            f"{position} (expected residues or a gap like [10] or [5-20])"
        )
    template = Template(text, tuple(segments))
    if not any(s.is_gap for s in segments):
        raise TemplateError(f"template {text!r} has no gap to generate (e.g. MKT[10])")
    if template.min_length == 0:
        raise TemplateError(
            f"template {text!r} can give an empty sequence (every gap may be 0 residues "
            f"and nothing is fixed): give a gap of at least 1 residue, e.g. [1-2]"
        )
    return template


def template_rows(
    templates: list[Template],
    num_per_template: int,
    encode,
    max_len: int,
    mask_id: int | None,
    pad_id: int,
    rng: np.random.Generator,
):
    """Sampler inputs for `num_per_template` samples of each template, template-major.

    encode(residues) -> ids. Returns x_init [N, max_len] int32 (fixed ids, mask at gaps,
    pad after), valid [N, max_len] bool, clamp [N, max_len] bool (True at fixed
    residues) and template_index [N] int32. Graphs without a mask id (uniform) pass
    `mask_id=None`: gaps then hold `pad_id`, which the sampler replaces by its start
    state at every valid unclamped position (as `common.generation.initial_tokens`).
    """
    gap_id = pad_id if mask_id is None else mask_id
    n = len(templates) * num_per_template
    x_init = np.full((n, max_len), pad_id, np.int32)
    valid = np.zeros((n, max_len), bool)
    clamp = np.zeros((n, max_len), bool)
    index = np.repeat(np.arange(len(templates), dtype=np.int32), num_per_template)
    for row, t in enumerate(index):
        template = templates[t]
        if template.max_length > max_len:
            raise TemplateError(
                f"template {template.text!r} can reach {template.max_length} residues; the "
                f"model takes at most {max_len}"
            )
        layout = template.draw(rng)
        fixed = np.array([c != "?" for c in layout])
        ids = np.full(len(layout), gap_id, np.int32)
        if fixed.any():
            ids[fixed] = encode("".join(c for c in layout if c != "?"))
        x_init[row, : len(layout)] = ids
        valid[row, : len(layout)] = True
        clamp[row, : len(layout)] = fixed
    return x_init, valid, clamp, index
