r"""The config schema: every default of mm_jax, per size.

``get_config(arg)`` builds a whole config (locked); ``model_config``,
``data_config``, ``train_config``, ``eval_config``, ``mesh_config`` and
``distributed_config`` build its sections. ``arg`` is a size name from
``SIZES`` (``tiny``, ``base``, ``paper``), optionally followed by ``,single``
for the single-task expert count. The experiment files (``configs/*.py``)
start from ``get_config`` and override fields; they never add keys.
``override`` sets dotted keys. ``mm_jax.config`` re-exports these names:

  from mm_jax import config as base
  config = base.get_config('tiny')
  config = base.override(config, {'train.num_train_steps': 5})

Sizes are one table, ``SIZES`` (no subclasses): width, heads, experts per
MoE layer (joint and single-task), k, compute dtype, vocabulary, image size
and classes of ``tiny``, ``base`` and ``paper``.
"""

import ml_collections


# name: (d_model, num_heads, attention projections, expert_hidden,
#        experts_joint, experts_single, k, compute dtype, vocab size, image
#        size, num classes). tiny uses paper-time T2T attention (1 head, no
#        projections); base and paper keep T2T multimodel_base's 8 projected
#        heads (the accelerator measurements and parameter counts use them).
SIZES = {
    'tiny': dict(d_model=128, num_heads=1, projections=False,
                 expert_hidden=256, experts_joint=8, experts_single=4, k=2,
                 dtype='float32', vocab_size=1024, image_size=64,
                 num_classes=48),
    'base': dict(d_model=512, num_heads=8, projections=True,
                 expert_hidden=2048, experts_joint=30, experts_single=15, k=2,
                 dtype='bfloat16', vocab_size=8192, image_size=299,
                 num_classes=1000),
    'paper': dict(d_model=1536, num_heads=8, projections=True,
                  expert_hidden=1536, experts_joint=120, experts_single=30,
                  k=4, dtype='bfloat16', vocab_size=8192, image_size=299,
                  num_classes=1000),
}


def parse_arg(arg):
  """'tiny' | 'base,single' | None -> (size, single_task: bool)."""
  parts = [p for p in (arg or 'tiny').split(',') if p]
  size, flags = parts[0], set(parts[1:])
  if size not in SIZES:
    raise ValueError(f'Unknown size {size!r}; choose one of {sorted(SIZES)}.')
  unknown = flags - {'single'}
  if unknown:
    raise ValueError(f'Unknown config flags {sorted(unknown)}; known: single.')
  return size, 'single' in flags


def split_arg(arg, choices, where: str):
  """Experiment arg ``'<choice>[,size]'`` -> (choice, size); size defaults to
  tiny; a bad arg raises naming ``where`` and the choices."""
  parts = [p for p in (arg or '').split(',') if p]
  if not parts or len(parts) > 2 or parts[0] not in choices or (
      len(parts) == 2 and parts[1] not in SIZES):
    raise ValueError(f'{where}: bad arg {arg!r}; use \'<choice>[,size]\' with '
                     f'choice one of {tuple(choices)} and size one of '
                     f"{tuple(SIZES)} (default 'tiny').")
  return parts[0], parts[1] if len(parts) == 2 else 'tiny'


def override(config, overrides):
  """Sets dotted keys (``{'train.num_train_steps': 5}``) on ``config``, which
  may be locked (it is returned locked); an unknown key raises naming it."""
  config = config.unlock() if hasattr(config, 'unlock') else config
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config.lock()


def model_config(size='tiny', single_task=False):
  """The model section for a size."""
  s = SIZES[size]
  m = ml_collections.ConfigDict()
  m.size = size
  m.d_model = s['d_model']
  m.vocab_size = s['vocab_size']
  # Tying: 'none' (T2T: separate input, target and softmax matrices),
  # 'target_softmax' (target embedding == softmax), 'all' (all three shared).
  m.tie_embeddings = 'none'
  m.num_target_spaces = 16          # rows of the task-token table
  # The task token is the decoder's first input (paper); True also adds it
  # to every later position, as T2T's Transformer adds its target-space
  # embedding to every input position (docs/model.md, "Modality nets").
  m.task_token_every_position = False
  # Dropout at the end of each ConvBlock. Off for tiny: a CPU
  # run sees each example about once, and 0.1 slowed learning ~3x there
  # (single-task parsing, step 150: token accuracy 0.46 with, 0.86 without).
  m.dropout = 0.0 if size == 'tiny' else 0.1
  m.dtype = s['dtype']              # compute dtype; parameters are float32
  m.param_dtype = 'float32'
  m.layer_norm_epsilon = 1e-6
  # Kernel initialiser (mm_jax/model/inits.py): 'orthogonal' is T2T's scope
  # initializer, tf.orthogonal_initializer(gain=1.0) (trainer_utils.py and
  # slicenet_params1 at 3d9c62f2; multimodel_base at eb5652f5); 'lecun'
  # (LeCun normal) trained worse in the tiny A/B (docs/model.md,
  # "Faithfulness to the paper and to T2T"; results/ab/t2t_switches_text.md).
  m.init = 'orthogonal'
  # The task-token table (task_token.py): 'orthogonal' (T2T: rows of norm 1)
  # or 'normal' (N(0, 1): rows of norm about sqrt(D)); a tie in the A/B.
  m.task_token_init = 'orthogonal'

  # Body, as T2T's paper-time multimodel.py + slicenet.py;
  # every deviation is a switch here (README "Faithfulness").
  # ConvBlock steps as (kernel, dilation) pairs.
  m.encoder_conv = ((3, 1), (7, 1), (15, 1), (31, 1))    # paper-time T2T
  m.decoder_conv = ((3, 1), (7, 1), (15, 1), (31, 1))
  m.num_encoder_blocks_before_moe = 2
  m.num_encoder_blocks_after_moe = 4
  m.num_decoder_blocks_before_moe = 2
  m.num_decoder_blocks_after_moe = 2
  # 't2t': y = S2(S1(x)); x <- x + y + S4(S3(x + y)) (multi_conv_res);
  # 'per_step': x <- x + S_i(x) after every step (mm_jax before issue 13).
  m.conv_block_topology = 't2t'
  # Which ConvBlock steps start with LayerNorm scale 0 (branch starts at 0):
  # 'none' (T2T), 'last' (the last step of each pair), 'all'. 'last' is a
  # declared deviation, an init choice only (same architecture and
  # parameters): 2-task tiny A/B, 300 steps, 2 seeds, parse / EN->DE token
  # accuracy 0.93 / 0.76 with 'last', 0.83 / 0.45 with 'none', 0.91 / 0.65
  # with 'all' (docs/experiments.md, "The paper's body").
  m.conv_block_zero_init = 'last'
  # Dropout (model.dropout) once at the end of each ConvBlock stack ('stack',
  # T2T) or at the end of every ConvBlock ('block').
  m.dropout_placement = 'stack'
  # Decoder: x <- x + AttnBlock(x, encoded) (True, T2T) or x <- AttnBlock
  # (False, mm_jax before issue 13).
  m.decoder_attention_residual = True
  m.attention_conv = ((5, 1), (5, 4))    # the two causal ConvSteps
  m.mixer_conv = (3, 1)                  # causal ConvStep of the I/O mixer
  # Attention: paper-time T2T ('simple') is 1 head without projections (the
  # tiny default: 2-task tiny A/B, 300 steps, 2 seeds, EN->DE token accuracy
  # 0.80 vs 0.76 with 4 projected heads, parse equal; docs/experiments.md).
  m.num_heads = s['num_heads']
  m.attention_projections = s['projections']
  m.use_attention = True                 # Table 4 ablation switch
  # 'xla' | 'cudnn' (cuDNN's fused kernel: NVIDIA GPUs, bf16, head dim <=
  # 128); the same function up to rounding.
  m.attention_impl = 'xla'
  # Timing signal: 16 timescales (sin, cos) in the first 32 channels, the
  # rest zero (T2T's 4-D add_timing_signal); 0 = every channel.
  m.timing_num_timescales = 16
  m.timing_max_timescale = 1.0e4
  # Sub-separable convolutions (T2T subseparable_conv): 0 = depthwise-
  # separable (the paper's text); -2 = T2T's multimodel_1p8 (slicenet_params1:
  # each pair of steps and the attention convs split into 3 then 2 groups).
  m.conv_separability = 0
  # The I/O mixer's conv: 0 = depthwise-separable; 4 = T2T's slicenet_middle
  # (4 groups of full convolutions, then a pointwise mix).
  m.mixer_separability = 0
  # LayerNorms on the encoder / decoder output (not in the paper; the
  # Transformer's final norms; docs/experiments.md, "The paper's body").
  # The decoder one is a declared deviation: T2T's decoder stream
  # x <- x + AttnBlock(x) reaches the output modality unnormalised. 2-task
  # tiny A/B, 300 steps, 2 seeds, parse / EN->DE token accuracy 0.94 / 0.84
  # (BLEU 47.3) with it, 0.93 / 0.80 (BLEU 38.9) without; the encoder one
  # does not help (0.93 / 0.75 with, 0.93 / 0.76 without).
  m.encoder_output_norm = False
  m.decoder_output_norm = True
  m.use_moe = True                       # Table 4 ablation switch (dense FFN)
  # Depthwise convolutions: 'auto' (shift-and-add or banded matmuls on CPU,
  # shift-and-add on GPU: 5-20x faster than XLA's grouped convolution there;
  # XLA's on TPU), 'xla', 'shift', 'banded' (1-D kernels; 2-D ones shift).
  # Numerically the same up to rounding (mm_jax/model/conv.py).
  m.depthwise_impl = 'auto'

  # Sparsely-gated mixture of experts (Shazeer et al. 2017).
  m.moe = ml_collections.ConfigDict()
  m.moe.num_experts = s['experts_single'] if single_task else s['experts_joint']
  m.moe.k = s['k']
  m.moe.hidden = s['expert_hidden']
  m.moe.noise_epsilon = 1e-2
  m.moe.capacity_factor_train = 1.25
  m.moe.capacity_factor_eval = 2.0
  m.moe.group_size = 1024            # tokens per routing group (capacity unit)
  # 'capacity' (drops overflow: C = ceil(cf k S / E)); 'ragged' (dropless,
  # grouped matmuls; one device or data parallelism); 'dense' (every expert
  # on every token, the test reference). T2T's MoE dropped nothing; a
  # capacity_factor_train of num_experts / k is dropless with capacity
  # dispatch too (C = S) and works with expert parallelism.
  m.moe.dispatch = 'capacity'
  m.moe.cv_loss_coef = 1e-2          # CV²(importance) + CV²(load)
  m.moe.switch_loss_coef = 0.0       # optional Switch-Transformer aux loss
  m.moe.z_loss_coef = 0.0            # optional router z-loss

  # Image modality (Xception entry flow) and categorical output (exit flow).
  m.image_entry_filters = (32, 64, 128, 256)   # then one ConvRes block to d
  # ReLU before the 1x1 skip of each entry-flow ConvRes block: T2T's
  # res_relu (True, False, False) (ImageModality, utils/modality.py at
  # 3d9c62f2). mm_jax applied it in all three until issue 25 (still what a
  # checkpoint without this key is read with: body.LEGACY_LAYOUT); T2T's won
  # the single-task ImageNet A/B (results/ab/t2t_switches_imagenet.md).
  m.image_skip_relu = (True, False, False)
  m.num_classes = s['num_classes']
  m.class_exit_multipliers = (1.25, 2.0, 2.5)  # exit-flow widths, x d

  # Audio modality. Its input is the contract's: contract.MEL_BINS log-mel
  # bins and contract.audio_channels(config.data.audio_deltas) channels.
  m.audio_input = 'spectrogram'       # 'spectrogram' | 'waveform'
  m.audio_time_reduction = 4          # total stride in time (power of two);
                                      # ConvRes i has 2**(i+1) filters (T2T)
  return m


# The eight paper tasks and the extra FR->EN, with T2T's weights.
PAPER_TASKS = ('speech_en', 'parse_en', 'imagenet', 'caption_en',
               'translate_en_de', 'translate_de_en', 'translate_en_fr',
               'translate_de_fr')
EXTRA_TASKS = ('translate_fr_en',)          # in the registry, off by default
ALL_TASKS = PAPER_TASKS + EXTRA_TASKS
# Loss weight per task (T2T: ImageNet 0.7, speech 2.0; the rest 1).
TASK_LOSS_WEIGHTS = {t: {'imagenet': 0.7, 'speech_en': 2.0}.get(t, 1.0)
                     for t in ALL_TASKS}


def use_joint_mixture(config, size='tiny'):
  """Sets the mixture and task loss weights of every joint 8-task run
  (joint8, table3 all8, table4) on ``config`` (locked or not).

  Real sizes: an even mixture over the paper's eight tasks with T2T's loss
  weights (``TASK_LOSS_WEIGHTS``). The tiny demo gives ImageNet 5 of every 12
  steps (its classifier needs several hundred steps, the text tasks far
  fewer) and captioning loss weight 0.1: captioning shares the image entry
  flow with ImageNet, and at weight 1 it held tiny ImageNet back (ImageNet
  training NLL after 240 steps: 3.43 with captioning, 3.21 with captioning
  at 0.1, 2.99 with a translation task instead), while at 0.1 captioning
  itself learns as fast (Adam rescales the gradients of the decoder)
  (docs/experiments.md, "ImageNet in the joint run").
  """
  for task in ALL_TASKS:
    config.data.mixture[task] = float(task in PAPER_TASKS)
  config.task_loss_weights.update(TASK_LOSS_WEIGHTS)
  if size == 'tiny':
    config.data.mixture.imagenet = 5.0
    config.task_loss_weights.caption_en = 0.1


def data_config(size='tiny'):
  """The data section: which tasks, from where, mixed how, in what shapes."""
  s = SIZES[size]
  d = ml_collections.ConfigDict()
  d.suite = 'tiny' if size == 'tiny' else 'real'   # 'tiny' | 'real'
  d.data_dir = ''          # '' -> $MM_JAX_DATA_DIR or ~/mm_jax_data (tiny),
                           #       $TFDS_DATA_DIR or ~/tensorflow_datasets (real)
  d.wsj_dir = ''           # user-supplied WSJ audio + transcripts
  d.ptb_dir = ''           # user-supplied Penn Treebank trees
  # Mixture: task name -> sampling weight (0 disables the task).
  d.mixture = ml_collections.ConfigDict(
      {t: float(t in PAPER_TASKS) for t in ALL_TASKS})
  d.mixing = 'fixed'       # 'fixed' | 'proportional' | 'temperature' | 'adaptive'
  d.mixing_temperature = 2.0   # p ~ size ** (1 / temperature)
  d.adaptive_decay = 0.99      # moving average of per-task loss (T2T rule)
  d.batch_size = 32 if size == 'tiny' else 256    # global, examples per step
  # Training batch of a task = batch_size x its multiplier (T2T's
  # batch_size_multiplier for fixed-shape problems); a task not listed: 1.
  d.batch_size_multiplier = ml_collections.ConfigDict(
      {t: 1 for t in ALL_TASKS})
  d.max_input_length = 48 if size == 'tiny' else 256     # text tokens
  d.max_target_length = 64 if size == 'tiny' else 256
  # Tiny: one shape per task (the sentences are short, at most ~40 tokens,
  # parse trees ~63), so the CPU compiles each step once
  # (docs/experiments.md, "The tiny demo").
  d.length_buckets = () if size == 'tiny' else (32, 64, 128, 256)
  d.image_size = s['image_size']
  # Image side of image -> class tasks (0: image_size). Tiny: ImageNet at
  # 32 px with 4x the batch, so an ImageNet step costs what a 64 px one of
  # 32 images did but sees 4x the images; the faithful image path learns
  # per example, and at 64 px it stayed near chance in the 15-minute demo
  # (docs/experiments.md, "Why the image path learns slowly").
  d.class_image_size = 32 if size == 'tiny' else 0
  # Image augmentation (preprocess.py): T2T's ('t2t': 80% resized to 360/299
  # of the size and cropped at random, else resized; utils/data_reader.py at
  # 3d9c62f2) for the real sizes; an Inception-style crop ('inception') for
  # the tiny suite's procedural images.
  d.image_augment = 'inception' if size == 'tiny' else 't2t'
  if size == 'tiny':
    d.batch_size_multiplier.imagenet = 4
  d.audio_max_frames = 800 if size == 'tiny' else 2048    # tiny: <8 s
  d.audio_frame_buckets = () if size == 'tiny' else (512, 1024, 2048)
  d.audio_deltas = False
  d.vocab_size = s['vocab_size']
  d.vocab_path = ''        # '' -> <data_dir>/vocab/spm_<size>.model
  d.shuffle_seed = 0
  d.prefetch = 2
  d.worker_count = 0       # grain worker processes (0 = in-process)
  # Tiny-suite sizes; prepared on first use.
  d.tiny = ml_collections.ConfigDict()
  d.tiny.seed = 1234
  # Train examples per task, in the paper's data regime: WSJ parsing (~40k
  # trees) and speech (~37k utterances) are tiny next to WMT (4.5M EN-DE
  # pairs), ImageNet (1.28M) and COCO (~400k captions); the transfer claims
  # are about those low-data tasks. Tasks sharing a dataset (parsing and the
  # translations) read prefixes of one generated set.
  d.tiny.num_train = ml_collections.ConfigDict(
      {t: TINY_NUM_TRAIN.get(t, 4000) for t in ALL_TASKS})
  d.tiny.num_eval = 200
  return d


# Tiny train sizes that differ from 4000 (see data_config).
TINY_NUM_TRAIN = {'parse_en': 300, 'speech_en': 300}


def tiny_sizes(num_train: int, num_eval: int = 0, **per_task) -> dict:
  """Dotted overrides giving every task ``num_train`` tiny train examples
  (``per_task`` names exceptions), and ``num_eval`` if given (for tests and
  small demos): ``override(config, tiny_sizes(64, 16, speech_en=16))``."""
  out = {f'data.tiny.num_train.{t}': int(per_task.get(t, num_train))
         for t in ALL_TASKS}
  if num_eval:
    out['data.tiny.num_eval'] = int(num_eval)
  return out


def train_config(size='tiny'):
  """Optimisation, schedule, loop cadence and evaluation."""
  tiny = size == 'tiny'
  t = ml_collections.ConfigDict()
  t.num_train_steps = 3000 if tiny else 500_000
  # 'noam': lr = learning_rate * d**-0.5 * min(step * warmup**-1.5, step**-0.5)
  # 'exp_warmup' (paper-time T2T): exponential rise over warmup_steps from
  #   learning_rate / 100 to learning_rate, then rsqrt decay.
  t.schedule = 'noam'
  # learning_rate is in optax's units: the step Adam takes (a scale x
  # d**-0.5 for noam, the peak otherwise). T2T's hparams are 500x larger:
  # its optimiser wrapper handed LazyAdam learning_rate / 500
  # (utils/trainer_utils.py@3d9c62f2, _ConditionalOptimizer; optim.py).
  # Tiny (mm_jax's own): peak 2.65e-3 at step 100 (noam peak = scale *
  # d**-0.5 * warmup**-0.5), so that the 15-minute CPU demo learns every
  # task; a scale of 2.0 with 400 warm-up steps peaked at 8.8e-3 and
  # diverged there.
  # Base: T2T's multimodel_base (models/multimodel.py@eb5652f5): the legacy
  # noam scheme 5000 d**-0.5 min(...) with learning_rate 0.1 and 4000
  # warm-up steps, over 500 (utils/optimize.py@eb5652f5): a scale of
  # 0.1 * 5000 / 500 = 1.0, a peak of 7.0e-4 at d = 512.
  t.learning_rate = 0.3 if tiny else 1.0     # noam scale (x d**-0.5)
  t.warmup_steps = 100 if tiny else 4000
  # 't2t_exp' (decay of its last decay_steps steps; optim.py).
  t.decay_rate = 0.9999955
  t.decay_steps = 500_000
  t.adam_b1 = 0.85
  t.adam_b2 = 0.997
  t.adam_eps = 1e-6
  t.grad_clip_norm = 2.0
  t.weight_decay = 0.0
  t.weight_decay_type = 'decoupled'   # | 'normalized_l2' (paper-time T2T)
  # normalized_l2 per T2T variable (one expert's matrix: T2T's) or per
  # stacked array (each of E experts decays E times more weakly).
  t.weight_decay_normalizer = 't2t_variable'   # | 'array'
  if size == 'base':
    # multimodel_base keeps basic_params1's weight_decay 0.1
    # (layers/common_hparams.py@eb5652f5), the normalised L2 of
    # utils/model_builder.py@eb5652f5.
    t.weight_decay, t.weight_decay_type = 0.1, 'normalized_l2'
  # T2T's --worker_replicas W: the learning rate over sqrt(W), the warm-up
  # times W (trainer_utils.py@3d9c62f2, learning_rate_decay and model_fn).
  # 1 = one synchronous replica takes T2T's numbers as they are.
  t.t2t_worker_replicas = 1
  if size == 'paper':
    # The paper's code: T2T hparams set multimodel_1p8 (multimodel.py at
    # 3d9c62f2) = slicenet_params1 (slicenet.py) + overrides, read by
    # trainer_utils.py at that commit:
    #   learning_rate_decay_scheme 'exp500k' (multimodel_1p8): exponential
    #     warm-up from 1% over learning_rate_warmup_steps 3000
    #     (slicenet_params1), then decay 0.9999955 per step over the last
    #     500k steps;
    #   learning_rate 0.05 (slicenet_params1), which LazyAdam received
    #     divided by 500 (trainer_utils.py, _ConditionalOptimizer): a peak
    #     Adam step of 1e-4 with one worker;
    #   worker_replicas 8: multimodel_1p8 sets problem_choice 'distributed',
    #     one problem per worker, and trainer_utils asserts that the worker
    #     count is a multiple of the problem count (8). T2T then divided the
    #     peak by sqrt(8) and stretched the warm-up to 3000 x 8 steps;
    #   weight_decay 3.0 (slicenet_params1), trainer_utils' normalised L2:
    #     3.0 * sum over matrices of l2_loss(v) / size(v).
    #   optimizer_adam_beta1 0.85, beta2 0.997, epsilon 1e-6, clip_grad_norm
    #     2.0, label_smoothing 0.1 (slicenet_params1): the defaults above.
    t.schedule, t.warmup_steps, t.learning_rate = 't2t_exp', 3000, 0.05 / 500
    t.t2t_worker_replicas = 8
    t.weight_decay, t.weight_decay_type = 3.0, 'normalized_l2'
  t.label_smoothing = 0.1
  t.log_every = 50 if tiny else 100
  t.eval_every = 1000 if tiny else 10_000
  t.checkpoint_every = 500 if tiny else 5000
  t.keep_checkpoints = 3
  t.init_from = ''            # checkpoint dir for fine-tuning (see README)
  # Rematerialisation of the body's ConvBlocks and attention blocks in the
  # backward pass (mm_jax/model/body.py, REMAT_POLICIES): it trades memory
  # for recomputation; parameters and numbers stay the same.
  #   'none': the backward pass keeps every activation (no recomputation);
  #   'dots': keeps only the matmul outputs of each block
  #           (dots_saveable) and recomputes the rest;
  #   'full': keeps only each block's input and recomputes the whole block
  #           (nothing_saveable).
  # Tested: tests/test_body.py::test_remat_gives_the_same_loss_and_gradients
  # ('full' against 'none'; an unknown value raises). 'dots' is covered only
  # by launch/gpu_check.sh's remat_dots variant, whose first loss the
  # benchmark compares with the default's.
  t.remat = 'none'
  return t


def eval_config(size='tiny'):
  e = ml_collections.ConfigDict()
  e.splits = ('validation',)
  e.max_batches = 2 if size == 'tiny' else 0     # 0 = the whole split
  e.batch_size = 64
  # Tiny: greedy search (beam 1), so the CPU demo's evaluation takes
  # seconds; the paper's beam 4 for the real sizes.
  e.beam_size = 1 if size == 'tiny' else 4
  e.length_penalty = 0.6
  e.max_decode_length = 64 if size == 'tiny' else 256
  e.num_samples = 4           # sample decodes written per task
  return e


def mesh_config():
  """Device mesh and the logical-axis -> mesh-axis rules."""
  m = ml_collections.ConfigDict()
  m.shape = ml_collections.ConfigDict({'data': -1, 'expert': 1, 'model': 1})
  # 'dp' | 'dp+ep' | 'fsdp+ep' (see mm_jax/sharding.py), or 'custom' with
  # the rules below, as (logical name, mesh axes) pairs.
  m.preset = 'dp'
  m.rules = ()
  return m


def distributed_config():
  d = ml_collections.ConfigDict()
  d.initialize = False        # call jax.distributed.initialize() at start
  d.coordinator_address = ''  # '' -> auto (TPU VMs, SLURM, ...)
  d.num_processes = 0         # 0 -> auto
  d.process_id = -1           # -1 -> auto
  return d


def get_config(arg=None):
  """Base config; ``arg`` selects the size (see module docstring)."""
  size, single = parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0
  # JAX's persistent compilation cache for training, evaluation and
  # inference ('' = leave JAX's setting alone, i.e. off unless
  # JAX_COMPILATION_CACHE_DIR is set): a resumed run does not recompile.
  config.compilation_cache_dir = '~/.cache/mm_jax/jax_cache'
  config.model = model_config(size, single)
  config.data = data_config(size)
  config.task_loss_weights = ml_collections.ConfigDict(TASK_LOSS_WEIGHTS)
  config.train = train_config(size)
  config.eval = eval_config(size)
  config.mesh = mesh_config()
  config.distributed = distributed_config()
  return config.lock()
