"""Defaults shared by every config file: each `get_config()` starts here and overrides.

Every key is consumed by the code; `--config.<key>=...` on the command line overrides a
value, and an unknown key is an error (the config is locked).
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.backend = "jax"  # jax | torch (the PyTorch twin, sedd_torch; single-track only)
    c.device = "auto"  # auto | cpu | cuda (jax and torch) | mps (torch only)
    # C allocator of the training process (sedd_jax/allocator.py): auto | tcmalloc | glibc |
    # system; auto keeps freed step buffers mapped on Linux CPU runs (restarts the process once)
    c.allocator = "auto"

    c.data = ml_collections.ConfigDict()
    # demo | mmseqs_examples | moses | fasta | smiles | uniref50 (prepared on the fly into a
    # cache) | shards (a directory written by `python -m sedd_jax.data.prepare`)
    c.data.source = "demo"
    c.data.path = ""  # the file (fasta, smiles, uniref50) or the shard directory (shards)
    c.data.vocab_size = 25  # tokenizer ids; 36 matches reference checkpoints
    c.data.max_len = 128
    c.data.min_len = 8
    c.data.crop = "start"  # start | center | random (window of records longer than max_len)
    c.data.val_fraction = 0.05
    c.data.max_sequences = 0  # 0 keeps all
    c.data.on_error = "fail"  # fail | skip (bad FASTA records)
    c.data.bucket_window = 0  # >0: sort each window of that many batches by length
    c.data.pad_multiple = 64  # bucketed batches are padded to a multiple of this
    c.data.num_workers = 0  # grain worker processes (0: batches built in the training process)
    c.data.prefetch = 4  # batches buffered ahead (per worker)
    c.data.verify_shards = True  # check every shard's sha256 against the manifest at start
    # SMILES data (ligand-only runs, and the ligand track of pairs): smiles (atom-level
    # tokens) | selfies (SELFIES symbols: every symbol string is a molecule)
    c.data.ligand_representation = "smiles"
    # a random SMILES of each molecule per (seed, epoch, record) at load time; the
    # vocabulary then also counts two random forms per training SMILES
    c.data.randomize_smiles = False

    c.model = ml_collections.ConfigDict()
    c.model.kind = "single"  # single (SEDD) | dual (DualTrackSEDD, pair data)
    c.model.hidden = 768
    c.model.n_blocks = 8
    c.model.n_heads = 12
    c.model.cond_dim = 256
    c.model.mlp_ratio = 4
    c.model.dropout = 0.1
    c.model.variant = "protlig"  # protlig (reference v100) | sedd (upstream)
    c.model.scale_by_sigma = True
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 | float16
    c.model.remat = "none"  # none | block (recompute each DDiT block in the backward pass)
    # auto: cuDNN fused attention on CUDA sm80+ in bfloat16/float16, else xla (the
    # hand-written attention of models/layers.py); cudnn forces the fused one (error where
    # it cannot run)
    c.model.attention = "auto"
    # False: a sigma-free network (absorbing graph only): the condition embedding sees
    # sigma = 0 and the score is its sigma-free output times the known factor of sigma
    # (RADD); the `cached` sampler is then exact
    c.model.time_conditioning = True

    c.graph = ml_collections.ConfigDict()
    c.graph.type = "absorb"

    c.noise = ml_collections.ConfigDict()
    c.noise.type = "loglinear"
    c.noise.eps = 1e-3

    c.training = ml_collections.ConfigDict()
    # global, per optimizer step (all devices and hosts, all micro-batches), unless
    # parallel.batch_per_device is set
    c.training.batch_size = 32
    c.training.accum = 1  # micro-batches per optimizer step
    c.training.n_steps = 1000  # optimizer steps
    c.training.stop_after_steps = 0  # >0: leave this invocation early (resume later)
    c.training.ema = 0.9999
    c.training.sampling_eps = 1e-3
    c.training.time_sampling = "uniform"  # uniform | antithetic (stratified over the global batch)
    c.training.log_every = 50
    c.training.eval_every = 500
    c.training.checkpoint_every = 500
    c.training.keep_checkpoints = 3
    # multi-process runs agree on SIGTERM/SIGUSR1 every k steps (a collective; one
    # process checks every step for free): training/preemption.py, docs/scaling.md
    c.training.preemption_check_every = 10
    # float16 only (model.dtype): dynamic loss scaling, see training/loss_scale.py
    c.training.loss_scale = ml_collections.ConfigDict()
    c.training.loss_scale.initial = 2.0**15  # multiplies each micro-batch's token-mean loss
    c.training.loss_scale.growth_interval = 2000  # finite steps in a row before x2
    c.training.loss_scale.min_scale = 1.0  # below it the run stops
    c.training.loss_scale.max_consecutive_skips = 20  # non-finite steps in a row -> stop

    # how the one train step runs on the devices (training/parallel.py)
    c.parallel = ml_collections.ConfigDict()
    c.parallel.mode = "jit"  # jit (NamedSharding) | shard_map | pmap
    c.parallel.fsdp = 1  # jit only: params/EMA/optimizer sharded over this many devices
    c.parallel.batch_per_device = 0  # >0: global batch = this x all devices of all hosts

    # multi-host runs (training/distributed.py): jax.distributed.initialize()
    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = "auto"  # auto (SLURM / Open MPI / PBS mpiexec) | never
    c.distributed.coordinator_address = ""  # host:port; set -> the two keys below are used
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    c.distributed.port = 12355  # coordinator port when the address comes from PBS

    c.loss = ml_collections.ConfigDict()
    c.loss.type = "score_entropy"  # score_entropy | masked_ce (absorbing graph only; MDLM/MD4)

    c.curriculum = ml_collections.ConfigDict()
    c.curriculum.type = "none"  # none | time_bias | sigma_scale
    c.curriculum.ramp = "exponential"  # linear | exponential | cosine
    c.curriculum.preschool_steps = 5000  # steps until the plain loss
    c.curriculum.bias_strength = 2.0  # time_bias: t ~ U^(1 + b * bias_strength)

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adamw"
    c.optim.lr = 3e-4
    c.optim.beta1 = 0.9
    c.optim.beta2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.warmup = 100
    c.optim.warmup_init_fraction = 0.0
    c.optim.final_lr_fraction = 0.01
    c.optim.grad_clip = 1.0
    c.optim.muon_beta = 0.95  # optim.optimizer = muon: its momentum
    c.optim.muon_rms = 0.2  # and the RMS of its update per unit lr (AdamW's, about)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 32
    c.eval.time_samples = 4  # fixed t-draws per validation sequence
    c.eval.max_batches = 0  # 0: the whole validation split
    c.eval.likelihood_time_samples = 128  # K times per sequence for the ELBO / perplexity
    c.eval.likelihood_method = "stratified"  # stratified | antithetic (K even)
    # ligands sampled at each evaluation for val/ligand_{validity,uniqueness,novelty}
    # (SMILES data only; 0: none)
    c.eval.sample_metrics_num = 0

    c.sampling = ml_collections.ConfigDict()
    c.sampling.predictor = "euler"
    c.sampling.steps = 128
    c.sampling.eps = 1e-5
    c.sampling.denoise = True
    c.sampling.num_samples = 8  # written as FASTA at the end of training
    c.sampling.length = 0  # 0: draw lengths from the training length distribution
    c.sampling.temperature = 1.0  # heuristic controls of each step's transition
    c.sampling.top_p = 1.0  # distribution (diffusion/sampling.sharpen); 1, 1: plain
    # predictor = "remdm" (diffusion/remdm.py): decoded tokens are re-masked with sigma_t,
    # "cap": min(eta, sigma_max), "rescale": eta * sigma_max (eta in [0, 1]), "conf":
    # sigma_max spread over decoded tokens by softmax(-confidence) (eta unused); no
    # remasking while t > remdm_t_on (1: from the start); eta = 0 is the analytic sampler
    c.sampling.remdm_schedule = "cap"
    c.sampling.remdm_eta = 0.008
    c.sampling.remdm_t_on = 1.0

    c.logging = ml_collections.ConfigDict()
    c.logging.wandb = "disabled"  # disabled | offline | online
    c.logging.project = "sedd"
    c.logging.progress_bar = True
    # throughput rows (training/throughput.py): the device's dense peak in TFLOP/s for
    # train/mfu (0: the datasheet table for known GPUs); measure_cpu_peak: on CPU, time a
    # 2048^2 matmul in the compute dtype once at start-up and use it as the peak
    c.logging.peak_tflops = 0.0
    c.logging.measure_cpu_peak = False
    return c


def dual_base_config() -> ml_collections.ConfigDict:
    """Defaults for protein–ligand pairs with DualTrackSEDD (`model.kind = "dual"`)."""
    c = base_config()
    c.data = ml_collections.ConfigDict()
    c.data.source = "demo_pairs"  # demo_pairs | pair_table | shards (prepared pairs)
    c.data.path = ""  # CSV/TSV/parquet for `pair_table`, the directory for `shards`
    c.data.sequence_column = "aa_sequence"
    c.data.smiles_column = "smiles"
    c.data.validate_smiles = True  # RDKit check when rdkit is installed
    c.data.canonicalize = False  # RDKit canonical SMILES before tokenizing
    c.data.on_error = "skip"  # skip (counted) | fail
    c.data.vocab_size = 25
    c.data.max_protein_len = 256
    c.data.max_ligand_len = 128  # longer SMILES are dropped, never truncated
    c.data.crop = "start"  # start | center | random (see docs/data.md for the choice)
    # demo_pairs: all (binders and non-binders alike) | authors (the pairs at or above each
    # table's binder threshold: KIBA score >= 12.1, pKd >= 7; sedd_jax/data/pairs.py)
    c.data.binders = "all"
    c.data.ligand_min_count = 1  # SMILES tokens seen fewer times map to <unk>
    c.data.val_fraction = 0.1  # of pairs; whole proteins are held out
    c.data.max_pairs = 0
    c.data.num_workers = 0
    c.data.prefetch = 4
    c.data.verify_shards = True
    c.data.ligand_representation = "smiles"  # smiles | selfies (see base_config)
    c.data.randomize_smiles = False
    c.eval.sample_metrics_num = 16

    del c.model["n_blocks"]
    c.model.kind = "dual"
    c.model.n_blocks_protein = 8
    c.model.n_blocks_ligand = 8
    c.model.cross_attention = True
    # p(L_generated | context) heads (models/length.py): trained by the conditional tasks'
    # loss (-log p(L | context) in the generated track's sum), drawn from when sampling a
    # conditional task without --length, and the length term of its likelihood; False (and
    # every checkpoint whose config lacks the key) uses the marginal length distribution
    c.model.length_head = True
    c.model.length_hidden = 64  # the heads' embedding / MLP width
    # the heads pool each token's embedding times a code of its position (8 sin/cos
    # numbers): which residues stand where, not only the composition; 0 (and checkpoints
    # without the key) pools the composition alone
    c.model.length_positions = 8
    # sinusoidal absolute positions added to both tracks' embeddings (no parameters): with
    # rotary attention alone an all-mask track gives every position the same output, so a
    # sampler's first reveals cannot know where they are (the conditioning benchmark: exact
    # ligands 3 % -> 61 %, docs/benchmarks.md); False (and every checkpoint whose config
    # lacks the key, e.g. the reference's) is the rotary-only network
    c.model.absolute_positions = True

    # probability of each task per training pair; one model learns all of them
    c.task = ml_collections.ConfigDict()
    c.task.joint = 0.5
    c.task.ligand_given_protein = 0.25
    c.task.protein_given_ligand = 0.25
    c.task.protein_only = 0.0
    c.task.ligand_only = 0.0
    return c
