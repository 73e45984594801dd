"""`PairTrack` (twin of sedd_jax/training/tasks/pairs.py): protein–ligand pairs with
`DualTrackSEDD` and a task mixture (`config.model.kind = "dual"`), from the trainer's
shards (`track_data.run_data`), batched in-process by `plan.Batcher`.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_jax.common.evaluation import unigram_log_p_from_counts
from sedd_jax.common.generation import initial_tokens, tokenizer_forbidden
from sedd_jax.common.noise import warn_schedule
from sedd_jax.common.sample_files import decode_ligands, write_pair_samples
from sedd_jax.common.tasks import TASKS, PairGraphs, TaskMixture
from sedd_jax.data.batching import iter_eval_batches, sample_lengths
from sedd_jax.data.track_data import max_val_rows, run_data
from sedd_torch.diffusion.catsample import generator_rand
from sedd_torch.diffusion.graphs import get_graph
from sedd_torch.diffusion.joint import joint_score_entropy_loss
from sedd_torch.diffusion.joint_sampling import sample_pairs
from sedd_torch.diffusion.losses import TERMS
from sedd_torch.diffusion.noise import get_noise
from sedd_torch.diffusion.oracles import unigram_log_score_fn
from sedd_torch.diffusion.parametrisation import as_dual_log_score_fn
from sedd_torch.models.dual import build_dual_model
from sedd_torch.training.evaluation import _generator, validation_loss
from sedd_torch.training.tasks.objectives import length_fn_of, pair_track_objective


class PairTrack:
    """Protein–ligand pairs with `DualTrackSEDD` and a task mixture (`model.kind = "dual"`)."""

    def __init__(self, config, device):
        self.config, self.device = config, device
        self.data = run_data(config, max_val_rows(config.eval))
        self.graphs = PairGraphs(
            get_graph(config.graph, self.data.protein_tokenizer.vocab_size),
            get_graph(config.graph, self.data.ligand_tokenizer.vocab_size),
        )
        self.noise = get_noise(config.noise)
        self.warnings: list[str] = []
        warn_schedule(self.graphs.protein, self.noise, self.warnings)
        self.mixture = TaskMixture.parse(config.task)
        self.model = build_dual_model(
            config.model,
            self.graphs.protein.dim,
            self.graphs.ligand.dim,
            self.graphs.protein.absorb,
            (config.data.max_protein_len, config.data.max_ligand_len),
        ).to(device)
        self.loss_type = config.get("loss", {}).get("type", "score_entropy")
        if self.loss_type not in TERMS:
            raise ValueError(f"loss.type={self.loss_type!r}: expected one of {sorted(TERMS)}")
        if self.loss_type == "masked_ce" and not self.graphs.protein.absorb:
            raise ValueError("loss.type=masked_ce needs graph.type=absorbing (uniform: SEDD)")
        self.parametrisation = "mean" if self.loss_type == "masked_ce" else "score"
        self.objective, self.step_metrics = pair_track_objective(
            self.graphs,
            self.noise,
            self.mixture,
            config.training.sampling_eps,
            config.curriculum,
            self.model.length_head,
            self.loss_type,
            config.training.get("time_sampling", "uniform"),
            config.training.batch_size,
        )

    def batcher(self, batch_size: int):
        """sedd_jax's training batches of (seed, step), read from the shards with numpy."""
        return self.data.batcher(self.config.data, batch_size, self.config.seed)

    def _tensors(self, batch) -> dict:
        return {
            k: torch.as_tensor(v, device=self.device).long()
            if v.dtype == np.int32
            else torch.as_tensor(v, device=self.device)
            for k, v in batch.items()
        }

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """Per-track validation losses (nats/token) of every task the mixture trains, each
        (batch, time sample) with its own fixed generator."""
        model.eval()
        ec, eps = self.config.eval, self.config.training.sampling_eps
        fill = {"protein": self.data.protein_tokenizer.pad_id, "ligand": 0}
        metrics = {}
        for task, prob in zip(TASKS, self.mixture.probs, strict=True):
            if prob == 0:
                continue
            sums, lengths = np.zeros(4), {}
            batches = iter_eval_batches(self.data.val, ec.batch_size, fill=fill)
            for b, batch in enumerate(batches):
                if ec.max_batches and b >= ec.max_batches:
                    break
                batch = self._tensors(batch)
                task_ids = torch.full(
                    (batch["protein"].shape[0],), TASKS.index(task), device=self.device
                )
                for k in range(ec.time_samples):
                    generator = _generator(self.config.seed, b * ec.time_samples + k)
                    out = joint_score_entropy_loss(
                        model,
                        self.graphs,
                        self.noise,
                        batch,
                        generator_rand(generator, self.device),
                        task_ids,
                        eps,
                        mode=task,
                        length_fn=length_fn_of(model),
                        loss_type=self.loss_type,
                    )
                    sums += [float(x) for x in out.sums()]
                    for name, value in out.length_sums().items():
                        lengths[name] = lengths.get(name, 0.0) + value
            for track, (s, n) in (("protein", sums[:2]), ("ligand", sums[2:])):
                if n > 0:
                    metrics[f"{task}/loss_{track}"] = s / n
                if lengths.get(f"length_{track}_rows", 0) > 0:
                    metrics[f"{task}/length_nll_{track}"] = (
                        lengths[f"length_{track}_sum"] / lengths[f"length_{track}_rows"]
                    )
        return metrics

    def baselines(self) -> dict:
        """Per-track unigram oracles (each track scored alone, as in its conditional task)."""
        out = {}
        ec = self.config.eval
        for track, tok in (
            ("protein", self.data.protein_tokenizer),
            ("ligand", self.data.ligand_tokenizer),
        ):
            graph = getattr(self.graphs, track)
            log_p = unigram_log_p_from_counts(self.data.unigram_counts(track, graph.n))
            oracle = unigram_log_score_fn(torch.as_tensor(log_p, device=self.device), graph)
            arrays = {"tokens": self.data.val[track], "valid": self.data.val[f"{track}_valid"]}
            out[f"loss_unigram_{track}"] = validation_loss(
                lambda valid, oracle=oracle: oracle,
                graph,
                self.noise,
                arrays,
                batch_size=ec.batch_size,
                time_samples=ec.time_samples,
                max_batches=ec.max_batches,
                pad_id=tok.pad_id,
                seed=self.config.seed,
                sampling_eps=self.config.training.sampling_eps,
                device=self.device,
            )
        return out

    def meta(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "protein_vocab_size": self.data.protein_tokenizer.vocab_size,
            "ligand_tokenizer": self.data.ligand_tokenizer.to_dict(),
            "protein_length_distribution": self.data.protein_lengths.tolist(),
            "ligand_length_distribution": self.data.ligand_lengths.tolist(),
        }

    @torch.no_grad()
    def write_samples(self, model, workdir: str, step: int) -> dict:
        """Joint samples as CSV (sedd_jax's `samples_joint.csv` columns)."""
        del step
        model.eval()
        sc, dc = self.config.sampling, self.config.data
        rng = np.random.default_rng(self.config.seed)
        p_tok, l_tok = self.data.protein_tokenizer, self.data.ligand_tokenizer
        n = sc.num_samples
        p_len = np.maximum(sample_lengths(self.data.protein_lengths, n, rng), 1)
        l_len = np.maximum(sample_lengths(self.data.ligand_lengths, n, rng), 1)
        protein, p_valid = initial_tokens(
            p_len, dc.max_protein_len, self.graphs.protein.mask_id, p_tok.pad_id
        )
        ligand, l_valid = initial_tokens(
            l_len, dc.max_ligand_len, self.graphs.ligand.mask_id, l_tok.pad_id
        )
        arrays = self._tensors(
            {
                "protein": protein,
                "protein_valid": p_valid,
                "ligand": ligand,
                "ligand_valid": l_valid,
            }
        )
        mask_ids = (self.graphs.protein.mask_id, self.graphs.ligand.mask_id)
        p, lig = sample_pairs(
            as_dual_log_score_fn(model, self.parametrisation, mask_ids),
            self.graphs,
            self.noise,
            arrays["protein"],
            arrays["ligand"],
            arrays["protein_valid"],
            arrays["ligand_valid"],
            generator_rand(torch.Generator().manual_seed(self.config.seed), self.device),
            task="joint",
            steps=sc.steps,
            predictor=sc.predictor,
            eps=sc.eps,
            denoise_last=sc.denoise,
            forbidden=tuple(
                torch.as_tensor(tokenizer_forbidden(graph, tok), device=self.device)
                for graph, tok in ((self.graphs.protein, p_tok), (self.graphs.ligand, l_tok))
            ),
        )
        p, lig = p.cpu().numpy(), lig.cpu().numpy()
        samples = {
            "sequence": p_tok.decode_batch(p, p_valid),
            "smiles": decode_ligands(l_tok, lig, l_valid),
            "selfies": None,
        }
        return {"samples_joint": write_pair_samples(workdir, "joint", samples)}
