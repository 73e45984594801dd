"""`SingleTrack` (twin of sedd_jax/training/tasks/single.py): unconditional SEDD over one
track (`config.model.kind = "single"`), from the trainer's shards (`track_data.run_data`),
batched in-process by `plan.Batcher` (the rows of sedd_jax's grain loader, without jax).
"""

from __future__ import annotations

import os

import torch

from sedd_jax.common.evaluation import unigram_log_p_from_counts
from sedd_jax.common.noise import warn_schedule
from sedd_jax.common.sample_files import write_protein_samples
from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.data.track_data import max_val_rows, run_data
from sedd_torch.diffusion.graphs import get_graph
from sedd_torch.diffusion.noise import get_noise
from sedd_torch.diffusion.oracles import unigram_log_score_fn
from sedd_torch.models.sedd import build_model
from sedd_torch.training.evaluation import model_score_fn, validation_loss
from sedd_torch.training.generation import generate, make_sampler
from sedd_torch.training.tasks.objectives import single_track_objective


class SingleTrack:
    """Unconditional SEDD over one track (`config.model.kind = "single"`)."""

    def __init__(self, config, device):
        self.config, self.device = config, device
        self.data = run_data(config, max_val_rows(config.eval))
        self.tokenizer = self.data.tokenizers["tokens"]
        self.lengths = self.data.lengths["tokens"]
        self.graph = get_graph(config.graph, self.tokenizer.vocab_size)
        self.noise = get_noise(config.noise)
        self.warnings: list[str] = []
        warn_schedule(self.graph, self.noise, self.warnings)
        self.model = build_model(config.model, self.graph.dim, self.graph.absorb).to(device)
        self.objective, self.step_metrics = single_track_objective(
            self.graph,
            self.noise,
            config.training.sampling_eps,
            config.curriculum,
            config.get("loss", {}).get("type", "score_entropy"),
            config.training.get("time_sampling", "uniform"),
            config.training.batch_size,
        )

    def batcher(self, batch_size: int):
        """sedd_jax's training batches of (seed, step), read from the shards with numpy."""
        return self.data.batcher(self.config.data, batch_size, self.config.seed)

    def _val_loss(self, score_fn_for_batch):
        ec = self.config.eval
        return validation_loss(
            score_fn_for_batch,
            self.graph,
            self.noise,
            self.data.val,
            batch_size=ec.batch_size,
            time_samples=ec.time_samples,
            max_batches=ec.max_batches,
            pad_id=self.tokenizer.pad_id,
            seed=self.config.seed,
            sampling_eps=self.config.training.sampling_eps,
            device=self.device,
        )

    def evaluate(self, model) -> dict:
        return {"loss": self._val_loss(model_score_fn(model))}

    def baselines(self) -> dict:
        """The best position-independent predictor (training unigram) under the same loss."""
        log_p = unigram_log_p_from_counts(self.data.unigram_counts("tokens", self.graph.n))
        oracle = unigram_log_score_fn(torch.as_tensor(log_p, device=self.device), self.graph)
        return {"loss_unigram": self._val_loss(lambda valid: oracle)}

    def meta(self) -> dict:
        meta = {
            "config": self.config.to_dict(),
            "protein_vocab_size": self.tokenizer.vocab_size,
            "length_distribution": self.lengths.tolist(),
            "data_kind": self.data.shards.kind,
        }
        if isinstance(self.tokenizer, SmilesTokenizer):
            meta["ligand_tokenizer"] = self.tokenizer.to_dict()
        return meta

    def write_samples(self, model, workdir: str, step: int) -> dict:
        sc = self.config.sampling
        tokens, valid = generate(
            make_sampler(model, self.graph, self.noise, sc),
            self.graph,
            self.tokenizer,
            num=sc.num_samples,
            max_len=self.config.data.max_len,
            length=sc.length,
            length_dist=self.lengths,
            seed=self.config.seed,
            device=self.device,
        )
        path = os.path.join(workdir, "samples.fasta")
        write_protein_samples(path, self.tokenizer.decode_batch(tokens, valid), step)
        return {"samples": path}
