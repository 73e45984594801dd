"""Throughput at each log point: step time, tokens/s, model FLOP/s per device, MFU and
the time the loop waited for data, measured without a host sync per step.

How the times are taken. The loop dispatches step i and goes on to fetch batch i + 1
while the device computes (async dispatch), so the wall time around `wrapper.step` says
nothing. Instead a watcher thread waits, in dispatch order, for each step's metrics to be
ready (`jax.block_until_ready`, off the training thread, which never waits for it) and
stamps c_i, the moment step i finished. For one logging interval:

  * interval_s T = c_last - t_start, where t_start is the moment the loop asked the
    loader for the interval's first batch. The hooks of the previous log point
    (evaluation, checkpoint dispatch) therefore fall outside every interval, while
    everything the loop does per step (waiting for data, building and transferring the
    batch, dispatch, compute, the one `device_get` of the log point) falls inside;
  * the first step of a process compiles: its c_first - t_start is reported once as
    `first_step_s`, and its interval starts at c_first without that step's tokens;
  * step_time_s = the median over the interval of c_i - c_(i-1) (c_(first - 1) =
    t_start): the step period, whichever of device or host limits it;
  * tokens_per_s = valid (non-pad) tokens of the interval's steps / T, padded_tokens_per_s
    counts pad positions too, sequences_per_s the rows (pairs for dual-track data); each
    host counts its own rows and multiplies by the process count (equal shares);
  * tflops_per_device = `model_flops` of each step's padded shapes, summed, / T / devices;
    mfu = that / the device's dense peak (`PEAK_TFLOPS`, `logging.peak_tflops`, or on
    CPU a matmul timed once at start-up with `logging.measure_cpu_peak`); absent when
    the peak is unknown;
  * data_wait_s = the summed time spent inside the loader's `next()` during the interval
    (so never more than T).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Dense (no sparsity) datasheet peaks per GPU in TFLOP/s, by the dtype the matmuls run in.
# Matched in this order against the upper-cased device_kind with "-" read as " ".
PEAK_TFLOPS = {
    "H200 NVL": {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5, "float16": 835.5},
    "H200": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H100 NVL": {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5, "float16": 835.5},
    "H100 PCIE": {"float32": 51.2, "tf32": 378.0, "bfloat16": 756.0, "float16": 756.0},
    "H100": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "V100S": {"float32": 16.4, "float16": 130.0},
    "V100 PCIE": {"float32": 14.0, "float16": 112.0},
    "V100": {"float32": 15.7, "float16": 125.0},
}
FULL_FLOAT32 = ("highest", "float32", "F32_F32_F32")  # jax_default_matmul_precision values


def track_flops(hidden: int, n_blocks: int, mlp_ratio: int, vocab: int, shape) -> float:
    """Matmul FLOPs of forward + backward (3 x forward; an m x k x n matmul is 2 m k n) of
    one DDiT stack and its output head on tokens of `shape` [..., L], N = their count:
    6 ((4 + 2 r) d^2 n + V d) N + 12 n N L d — the weights acting on every token (qkv,
    out, fc1, fc2, head) and the attention scores and values. The adaLN and sigma
    weights act once per sequence and are not counted."""
    tokens, length = int(np.prod(shape)), shape[-1]
    d, n = hidden, n_blocks
    return 6 * ((4 + 2 * mlp_ratio) * d * d * n + vocab * d) * tokens + 12 * n * tokens * length * d


def cross_flops(hidden: int, paired: int, protein_shape, ligand_shape) -> float:
    """The two cross blocks of each of `paired` layers: 6 x 4 d^2 (N_p + N_l) +
    24 B L_p L_l d (q and out per query token, k and v per context token, both ways)."""
    n_p, n_l = int(np.prod(protein_shape)), int(np.prod(ligand_shape))
    rows_lp_ll = n_p * ligand_shape[-1]  # B L_p L_l
    return paired * (6 * 4 * hidden * hidden * (n_p + n_l) + 24 * rows_lp_ll * hidden)


def flops_of_shapes(model: Mapping, shapes: Sequence, vocabs: Sequence[int]) -> float:
    """Model FLOPs of one train step (forward + backward) on token arrays of `shapes`.

    model: the fields of `config.model` (hidden, n_blocks or n_blocks_protein /
    n_blocks_ligand, optional mlp_ratio and cross_attention); shapes and vocabs: ([B, L],),
    (V,) for one track, ([B, L_p], [B, L_l]), (V_p, V_l) for the dual-track model.
    """
    d, r = model["hidden"], model.get("mlp_ratio", 4)
    if "n_blocks" in model:
        return track_flops(d, model["n_blocks"], r, vocabs[0], shapes[0])
    blocks = (model["n_blocks_protein"], model["n_blocks_ligand"])
    tracks = sum(track_flops(d, n, r, v, s) for n, v, s in zip(blocks, vocabs, shapes, strict=True))
    paired = min(blocks) if model.get("cross_attention", True) else 0
    return tracks + cross_flops(d, paired, *shapes)


def model_flops(model: Mapping, batch: int, lengths: Sequence[int], vocabs: Sequence[int]):
    """`flops_of_shapes` of `batch` rows of `lengths` ((L,) or (L_p, L_l))."""
    return flops_of_shapes(model, [(batch, length) for length in lengths], vocabs)


def _module_tracks(module) -> tuple[dict, list[tuple[str, int]]]:
    """(the FLOP fields, [(batch key of a validity mask, its track's vocabulary)]) of a
    `SEDD` or `DualTrackSEDD` module."""
    names = ("hidden", "mlp_ratio", "n_blocks", "n_blocks_protein", "n_blocks_ligand")
    fields = {k: getattr(module, k) for k in names + ("cross_attention",) if hasattr(module, k)}
    if "n_blocks" in fields:
        return fields, [("valid", module.vocab_size)]
    return fields, [("protein_valid", module.protein_vocab), ("ligand_valid", module.ligand_vocab)]


def matmul_dtype(device_kind: str, compute_dtype: str) -> str:
    """The peak that applies: float32 matmuls run as TF32 on Ampere and later unless
    `jax_default_matmul_precision` asks for full float32."""
    if compute_dtype != "float32":
        return compute_dtype
    precision = str(jax.config.jax_default_matmul_precision)
    peaks = lookup_peaks(device_kind) or {}
    return "tf32" if "tf32" in peaks and precision not in FULL_FLOAT32 else "float32"


def lookup_peaks(device_kind: str) -> dict | None:
    kind = device_kind.upper().replace("-", " ")
    return next((peaks for name, peaks in PEAK_TFLOPS.items() if name in kind), None)


def measure_matmul_tflops(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """Best of `repeats` n x n matmuls on the default device, in TFLOP/s."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def device_peak_tflops(config) -> float | None:
    """Peak TFLOP/s of one device for `config.model.dtype`: `logging.peak_tflops` when
    set, else the datasheet table, else (CPU, `logging.measure_cpu_peak`) measured."""
    if config.logging.peak_tflops > 0:
        return float(config.logging.peak_tflops)
    device = jax.devices()[0]
    peaks = lookup_peaks(device.device_kind)
    if peaks is not None:
        return peaks.get(matmul_dtype(device.device_kind, config.model.dtype))
    if device.platform == "cpu" and config.logging.measure_cpu_peak:
        return measure_matmul_tflops(config.model.dtype)
    return None


class Throughput:
    """Interval throughput of the training loop (module docstring). Use:

    meter = Throughput.create(config, task.model)
    for step, host_batch in zip(bar, meter.timed(batches)):
        dstate, metrics = wrapper.step(...)
        meter.dispatched(host_batch, metrics)
        ... at a log point, after jax.device_get: row.update(meter.report())
    meter.close()
    """

    def __init__(self, fields: dict, tracks, peak_tflops: float | None, hosts=1, devices=1):
        self.fields, self.tracks = fields, tracks
        self.peak_tflops, self.hosts, self.devices = peak_tflops, hosts, devices
        self.steps: list[dict] = []  # this interval's: counts, wait (start, end), done (c_i)
        self.t_start = None
        self.wait = (0.0, 0.0)
        self.first = True
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @classmethod
    def create(cls, config, module) -> Throughput:
        fields, tracks = _module_tracks(module)
        peak = device_peak_tflops(config)
        return cls(fields, tracks, peak, jax.process_count(), jax.device_count())

    def _watch(self):
        """Stamp each step's completion, in dispatch order, until `close`."""
        while (item := self._queue.get()) is not None:
            record, metrics = item
            try:
                jax.block_until_ready(metrics)
            except Exception:  # the training thread's device_get raises it too
                pass
            record["done"] = time.perf_counter()
            self._queue.task_done()
        self._queue.task_done()

    def timed(self, batches: Iterable) -> Iterator:
        """`batches`, timing each `next()`; the first of an interval starts its clock."""
        iterator = iter(batches)
        while True:
            start = time.perf_counter()
            if self.t_start is None:
                self.t_start = start
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.wait = (start, time.perf_counter())
            yield batch

    def counts(self, host_batch: Mapping) -> dict:
        """This host's batch -> valid and padded tokens, rows and model FLOPs (all hosts)."""
        masks = [np.asarray(host_batch[key]) for key, _ in self.tracks]
        shapes = [mask.shape for mask in masks]
        flops = flops_of_shapes(self.fields, shapes, [vocab for _, vocab in self.tracks])
        return {
            "valid_tokens": self.hosts * sum(int(mask.sum()) for mask in masks),
            "padded_tokens": self.hosts * sum(mask.size for mask in masks),
            "sequences": self.hosts * int(np.prod(shapes[0][:-1])),
            "flops": self.hosts * flops,
        }

    def dispatched(self, host_batch: Mapping, metrics) -> None:
        """Record a dispatched step; its completion is stamped by the watcher thread."""
        record = {"counts": self.counts(host_batch), "wait": self.wait}
        self.steps.append(record)
        self._queue.put((record, metrics))

    def report(self) -> dict:
        """The interval's throughput row (keys of the module docstring); starts the next.
        Call after the log point's `device_get`, so the watcher is at most a wake-up behind."""
        self._queue.join()
        steps, start = self.steps, self.t_start
        row = {}
        if self.first and steps:
            first, steps = steps[0], steps[1:]
            row["first_step_s"] = first["done"] - start
            start, self.first = first["done"], False
        self.steps, self.t_start = [], None
        if not steps:
            return row
        interval = steps[-1]["done"] - start
        done = [start] + [s["done"] for s in steps]
        total = {k: sum(s["counts"][k] for s in steps) for k in steps[0]["counts"]}
        row.update(
            interval_s=interval,
            step_time_s=float(np.median(np.diff(done))),
            tokens_per_s=total["valid_tokens"] / interval,
            padded_tokens_per_s=total["padded_tokens"] / interval,
            sequences_per_s=total["sequences"] / interval,
            tflops_per_device=total["flops"] / interval / self.devices / 1e12,
            # the part of each wait inside the interval: in the first one, the wait for
            # batch 2 can begin while the first step still runs
            data_wait_s=sum(max(0.0, b - max(a, start)) for a, b in (s["wait"] for s in steps)),
        )
        if self.peak_tflops:
            row["mfu"] = row["tflops_per_device"] / self.peak_tflops
        return row

    def close(self):
        self._queue.put(None)
        self._thread.join()
