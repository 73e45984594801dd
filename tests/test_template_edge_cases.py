"""Templates on graphs without a mask id, and templates that could give empty rows."""

import numpy as np
import pytest

from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.data.templates import TemplateError, parse_template, template_rows


def test_template_rows_on_the_uniform_graph_fill_gaps_with_pad():
    tok = ProteinTokenizer(25)
    x, valid, clamp, _ = template_rows(
        [parse_template("AC[4]W")], 2, tok.encode, 10, None, tok.pad_id, np.random.default_rng(0)
    )
    assert x.dtype == np.int32
    np.testing.assert_array_equal(valid.sum(axis=1), [7, 7])
    np.testing.assert_array_equal(clamp[0, :7], [True, True, False, False, False, False, True])
    np.testing.assert_array_equal(x[0, [0, 1, 6]], tok.encode("ACW"))
    assert (x[:, 2:6] == tok.pad_id).all()


@pytest.mark.parametrize("text", ["[0-2]", "[0-3][0-1]", "[0]"])
def test_templates_that_can_be_empty_are_refused(text):
    with pytest.raises(TemplateError):
        parse_template(text)


def test_zero_length_gaps_next_to_fixed_residues_never_give_empty_rows():
    tok = ProteinTokenizer(25)
    templates = [parse_template("[0-2]M"), parse_template("[1-2]")]
    _, valid, _, _ = template_rows(
        templates, 200, tok.encode, 4, 25, tok.pad_id, np.random.default_rng(3)
    )
    assert valid.sum(axis=1).min() >= 1
