"""Throughput rows of the training loop (`training/throughput.py`): present at every log
point, consistent with the batches the loader produced and with the FLOP formula of
scripts/bench_train.py. No wall-clock time is asserted, only identities between the
logged numbers."""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.defaults import base_config, dual_base_config
from sedd_jax.models.dual import build_dual_model
from sedd_jax.models.sedd import build_model
from sedd_jax.training import throughput
from sedd_jax.training.loop import train_and_evaluate
from sedd_jax.training.tasks import build_task
from tests.helpers import load_script

FIELDS = (
    "interval_s",
    "step_time_s",
    "tokens_per_s",
    "padded_tokens_per_s",
    "sequences_per_s",
    "tflops_per_device",
    "mfu",
    "data_wait_s",
)


def tiny_config():
    c = base_config()
    c.data.max_len = 128  # demo proteins shorter than this leave padding
    c.model.hidden, c.model.n_blocks, c.model.n_heads, c.model.cond_dim = 32, 1, 2, 16
    c.model.dropout = 0.0
    c.training.batch_size = 4
    c.training.n_steps = 13
    c.training.log_every = 4  # log points 4, 8, 12 and the last step 13
    c.training.eval_every = 8  # an evaluation between two intervals is not counted
    c.training.checkpoint_every = 10_000
    c.eval.max_batches = 1
    c.sampling.steps = 2
    c.sampling.num_samples = 1
    c.logging.progress_bar = False
    c.logging.peak_tflops = 0.5
    return c


@pytest.mark.slow
def test_throughput_fields_at_every_log_point_match_the_loaders_batches(tmp_path):
    config = tiny_config()
    train_and_evaluate(config, str(tmp_path))
    rows = [r for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    assert [r["step"] for r in rows] == [4, 8, 12, 13]

    batches = build_task(config).train_loader(4).iterate(0)
    valid = [int(next(batches)["valid"].sum()) for _ in range(13)]
    # the first step compiles: reported alone, its interval counts steps 2-4
    counted = {4: valid[1:4], 8: valid[4:8], 12: valid[8:12], 13: valid[12:13]}
    assert "train/first_step_s" in rows[0]
    assert all("train/first_step_s" not in r for r in rows[1:])
    assert sum(valid) < 13 * 4 * 128  # the check below sees padding
    flops = throughput.model_flops(dict(config.model), 4, (128,), (26,))
    for row in rows:
        assert all(f"train/{k}" in row for k in FIELDS), row
        m = {k: row[f"train/{k}"] for k in FIELDS}
        steps, interval = len(counted[row["step"]]), m["interval_s"]
        assert interval > 0 and 0 < m["step_time_s"] <= interval
        assert 0 <= m["data_wait_s"] <= interval
        np.testing.assert_allclose(m["tokens_per_s"] * interval, sum(counted[row["step"]]))
        np.testing.assert_allclose(m["padded_tokens_per_s"] * interval, steps * 4 * 128)
        np.testing.assert_allclose(m["sequences_per_s"] * interval, steps * 4)
        np.testing.assert_allclose(m["tflops_per_device"] * 1e12 * interval, steps * flops)
        np.testing.assert_allclose(m["mfu"], m["tflops_per_device"] / 0.5)


def test_data_wait_is_the_time_spent_in_the_loader():
    meter = throughput.Throughput(
        {"hidden": 8, "n_blocks": 1, "mlp_ratio": 4}, [("valid", 5)], None
    )
    batch = {"valid": np.ones((2, 4), bool)}

    def slow_loader():
        while True:
            time.sleep(0.02)
            yield batch

    for _, host_batch in zip(range(4), meter.timed(slow_loader()), strict=False):
        meter.dispatched(host_batch, jnp.zeros(()))
    row = meter.report()  # the first step is reported alone
    assert set(row) >= {"first_step_s", "data_wait_s"} and "mfu" not in row  # no peak
    # batches 3 and 4 are waited for inside the interval (batch 2's wait may begin while
    # the first step is still being stamped)
    assert row["data_wait_s"] >= 2 * 0.02 and row["interval_s"] >= row["data_wait_s"]
    meter.close()


def _formula(kind, fields, batch, lengths, vocabs):
    """The formula of scripts/bench_train.py as it was written there, an independent oracle
    (the dense weights of a block: qkv and output 4 d^2, the MLP 2 r d^2; r = 4 there)."""
    d, r = fields["hidden"], fields.get("mlp_ratio", 4)
    if kind == "single":
        (length,) = lengths
        n, tokens = fields["n_blocks"], batch * length
        dense = (4 + 2 * r) * d * d * n + vocabs[0] * d
        return 6 * dense * tokens + 12 * n * batch * length**2 * d
    (lp, ll) = lengths
    np_, nl = fields["n_blocks_protein"], fields["n_blocks_ligand"]
    tp, tl = batch * lp, batch * ll
    tracks = sum(
        6 * ((4 + 2 * r) * d * d * n + v * d) * t + 12 * n * batch * length**2 * d
        for n, v, t, length in ((np_, vocabs[0], tp, lp), (nl, vocabs[1], tl, ll))
    )
    return tracks + min(np_, nl) * (6 * 4 * d * d * (tp + tl) + 24 * batch * lp * ll * d)


@pytest.fixture(scope="module")
def bench_train():
    return load_script("bench_train")


def test_flop_count_is_bench_trains_formula(bench_train):
    assert bench_train.model_flops is throughput.model_flops
    vocabs = (bench_train.PROTEIN_V, bench_train.LIGAND_V)
    for kind, fields, batch, lengths in bench_train.SIZES.values():
        got = throughput.model_flops(fields, batch, lengths, vocabs)
        assert got == _formula(kind, fields, batch, lengths, vocabs), kind


def test_per_batch_count_of_the_training_loop_equals_the_formula():
    single = base_config().model
    single.update(hidden=64, n_blocks=3, n_heads=4)
    dual = dual_base_config().model
    dual.update(hidden=64, n_blocks_protein=3, n_blocks_ligand=2, n_heads=4)
    cases = [
        (build_model(single, 26, True), {"valid": np.ones((6, 40), bool)}, (40,), (26,)),
        (
            build_dual_model(dual, 26, 31, True, (40, 16)),
            {"protein_valid": np.ones((6, 40), bool), "ligand_valid": np.zeros((6, 16), bool)},
            (40, 16),
            (26, 31),
        ),
    ]
    for module, batch, lengths, vocabs in cases:
        fields, tracks = throughput._module_tracks(module)
        meter = throughput.Throughput(fields, tracks, None, hosts=2)
        counts = meter.counts(batch)
        model = dict(single if len(lengths) == 1 else dual)
        assert counts["flops"] == 2 * _formula(
            "single" if len(lengths) == 1 else "dual", model, 6, lengths, vocabs
        )
        assert counts["sequences"] == 12 and counts["padded_tokens"] == 2 * 6 * sum(lengths)
        meter.close()


@pytest.mark.parametrize(
    "kind,dtype,peak",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
        ("NVIDIA H100 PCIe", "float16", 756.0),
        ("NVIDIA H200", "float32", 494.7),  # float32 matmuls run as TF32 by default
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312.0),
        ("Tesla V100-SXM2-16GB", "float16", 125.0),
        ("Tesla V100-PCIE-32GB", "float32", 14.0),
        ("Tesla V100-SXM2-16GB", "bfloat16", None),  # no bf16 tensor cores
        ("cpu", "float32", None),
    ],
)
def test_datasheet_peaks(kind, dtype, peak):
    peaks = throughput.lookup_peaks(kind) or {}
    assert peaks.get(throughput.matmul_dtype(kind, dtype)) == peak
