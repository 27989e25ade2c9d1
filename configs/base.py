r"""Base configuration: every default of mm_jax lives here (the schema).

Experiment files call ``get_config(arg)`` from this module and override fields;
they never add keys. ``arg`` is a size name from ``SIZES`` (``tiny``, ``base``,
``paper``), optionally followed by ``,single`` for the single-task expert count.

  python launch/train.py --config=configs/base.py:tiny --workdir=/tmp/mm_tiny

Sizes (SPEC §3.4), one table, no subclasses:

  size   d     heads  expert hidden  experts/MoE layer (joint | single)  k  dtype
  tiny   128   4      256            8 | 4                               2  float32
  base   512   8      2048           30 | 15                             2  bfloat16
  paper  1536  8      1536           120 | 30                            4  bfloat16
"""

import ml_collections

# name: (d_model, num_heads, expert_hidden, experts_joint, experts_single, k,
#        compute dtype, vocab size, image size, num classes)
SIZES = {
    'tiny': dict(d_model=128, num_heads=4, expert_hidden=256, experts_joint=8,
                 experts_single=4, k=2, dtype='float32', vocab_size=1024,
                 image_size=64, num_classes=48),
    'base': dict(d_model=512, num_heads=8, expert_hidden=2048, experts_joint=30,
                 experts_single=15, k=2, dtype='bfloat16', vocab_size=8192,
                 image_size=299, num_classes=1000),
    'paper': dict(d_model=1536, num_heads=8, expert_hidden=1536,
                  experts_joint=120, experts_single=30, k=4, dtype='bfloat16',
                  vocab_size=8192, image_size=299, num_classes=1000),
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
  """The model section for a size (SPEC §3)."""
  s = SIZES[size]
  m = ml_collections.ConfigDict()
  m.size = size
  m.d_model = s['d_model']
  m.vocab_size = s['vocab_size']
  m.pad_id = 0
  # Tying: 'none' (T2T: separate input, target and softmax matrices),
  # 'target_softmax' (target embedding == softmax), 'all' (all three shared).
  m.tie_embeddings = 'none'
  m.num_target_spaces = 16          # rows of the task-token table
  # The task token is the decoder's first input (paper); True also adds it
  # to every later position, as T2T's Transformer adds its target-space
  # embedding to every input position (see BUILD_NOTES "Task token").
  m.task_token_every_position = False
  # Dropout at the end of each ConvBlock (SPEC §3.2). Off for tiny: a CPU
  # run sees each example about once, and 0.1 slowed learning ~3x there
  # (single-task parsing, step 150: token accuracy 0.46 with, 0.86 without).
  m.dropout = 0.0 if size == 'tiny' else 0.1
  m.dtype = s['dtype']              # compute dtype; parameters are float32
  m.param_dtype = 'float32'
  m.layer_norm_epsilon = 1e-6

  # Body (SPEC §3.2-3.3). ConvBlock steps as (kernel, dilation) pairs.
  m.encoder_conv = ((3, 1), (7, 1), (15, 1), (31, 1))    # paper-time T2T
  m.decoder_conv = ((3, 1), (7, 1), (15, 1), (31, 1))
  m.num_encoder_blocks_before_moe = 2
  m.num_encoder_blocks_after_moe = 4
  m.num_decoder_blocks_before_moe = 2
  m.num_decoder_blocks_after_moe = 2
  m.attention_conv = ((5, 1), (5, 4))    # the two causal ConvSteps
  m.mixer_conv = (3, 1)                  # causal ConvStep of the I/O mixer
  m.num_heads = s['num_heads']
  m.attention_projections = True         # False + 1 head == paper-time T2T
  m.use_attention = True                 # Table 4 ablation switch
  # LayerNorm on the encoder output (not in the paper): without it the
  # residual sums of 24 ConvSteps reach RMS ~5, every decoder attention block
  # LN(x + attention) is dominated by the encoder side, the task token and
  # the previous targets are washed out, and joint training stalls
  # (BUILD_NOTES "The tiny demo"). False gives the paper's encoder.
  m.encoder_output_norm = True
  # Initial scale of the LayerNorm ending each ConvBlock step (residual
  # branch). 0 ("zero-gamma") starts the 24 encoder steps as the identity; at
  # 1 (the usual LayerNorm init) the image task barely moves off chance in
  # the tiny demo's budget (BUILD_NOTES "Zero-initialised residual
  # branches"). An init choice only: the architecture and parameter count
  # are the paper's.
  m.conv_block_norm_scale_init = 0.0
  m.use_moe = True                       # Table 4 ablation switch (dense FFN)
  m.timing_max_timescale = 1.0e4
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
  m.moe.dispatch = 'capacity'        # 'capacity' | 'dense' (reference)
  m.moe.cv_loss_coef = 1e-2          # CV²(importance) + CV²(load)
  m.moe.switch_loss_coef = 0.0       # optional Switch-Transformer aux loss
  m.moe.z_loss_coef = 0.0            # optional router z-loss

  # Image modality (Xception entry flow) and categorical output (exit flow).
  m.image_entry_filters = (32, 64, 128, 256)   # then one ConvRes block to d
  m.num_classes = s['num_classes']
  m.class_exit_multipliers = (1.25, 2.0, 2.5)  # exit-flow widths, x d

  # Audio modality.
  m.audio_mel_bins = 80
  m.audio_channels = 1                # 3 with delta / delta-delta
  m.audio_input = 'spectrogram'       # 'spectrogram' | 'waveform'
  m.audio_time_reduction = 4          # total stride in time (power of two);
                                      # ConvRes i has 2**(i+1) filters (T2T)
  return m


# The eight paper tasks (SPEC §2) and the extra FR->EN, with T2T's weights.
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
  (BUILD_NOTES "ImageNet in the joint run").
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
  # parse trees ~63), so the CPU compiles each step once (BUILD_NOTES).
  d.length_buckets = () if size == 'tiny' else (32, 64, 128, 256)
  d.image_size = s['image_size']
  # Image side of image -> class tasks (0: image_size). Tiny: ImageNet at
  # 32 px with 4x the batch, so an ImageNet step costs what a 64 px one of
  # 32 images did but sees 4x the images; the faithful image path learns
  # per example, and at 64 px it stayed near chance in the 15-minute demo
  # (BUILD_NOTES "Why the image path learns slowly").
  d.class_image_size = 32 if size == 'tiny' else 0
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
  # Tiny-suite sizes (examples per task); prepared on first use.
  d.tiny = ml_collections.ConfigDict()
  d.tiny.seed = 1234
  d.tiny.num_train = 4000
  d.tiny.num_eval = 200
  d.tiny.num_speech_train = 1500
  return d


def train_config(size='tiny'):
  """Optimisation, schedule, loop cadence and evaluation (SPEC §4-§5)."""
  tiny = size == 'tiny'
  t = ml_collections.ConfigDict()
  t.num_train_steps = 3000 if tiny else 500_000
  # 'noam': lr = learning_rate * d**-0.5 * min(step * warmup**-1.5, step**-0.5)
  # 'exp_warmup' (paper-time T2T): exponential rise over warmup_steps from
  #   learning_rate / 100 to learning_rate, then rsqrt decay.
  t.schedule = 'noam'
  # Tiny: peak 2.65e-3 at step 100 (noam peak = scale * d**-0.5 *
  # warmup**-0.5), so that the 15-minute CPU demo learns every task; a
  # scale of 2.0 with 400 warm-up steps peaked at 8.8e-3 and diverged there.
  t.learning_rate = 0.3 if tiny else 0.2     # noam scale (x d**-0.5)
  t.warmup_steps = 100 if tiny else 4000
  if size == 'paper':     # the paper's own schedule (SPEC §4)
    t.schedule, t.warmup_steps, t.learning_rate = 'exp_warmup', 3000, 1e-4
  t.adam_b1 = 0.85
  t.adam_b2 = 0.997
  t.adam_eps = 1e-6
  t.grad_clip_norm = 2.0
  t.weight_decay = 0.0
  t.label_smoothing = 0.1
  t.log_every = 50 if tiny else 100
  t.eval_every = 1000 if tiny else 10_000
  t.checkpoint_every = 500 if tiny else 5000
  t.keep_checkpoints = 3
  t.init_from = ''            # checkpoint dir for fine-tuning (see README)
  t.remat = not tiny          # rematerialise body blocks to save memory
  return t


def eval_config(size='tiny'):
  e = ml_collections.ConfigDict()
  e.splits = ('validation',)
  e.max_batches = 2 if size == 'tiny' else 0     # 0 = the whole split
  e.batch_size = 64
  # Tiny: greedy search (beam 1), so the CPU demo's evaluation takes
  # seconds; the paper's beam 4 for the real sizes (SPEC §5).
  e.beam_size = 1 if size == 'tiny' else 4
  e.length_penalty = 0.6
  e.max_decode_length = 64 if size == 'tiny' else 256
  e.num_samples = 4           # sample decodes written per task
  return e


def mesh_config():
  """Device mesh and the logical-axis -> mesh-axis rules (SPEC §4)."""
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
  config.model = model_config(size, single)
  config.data = data_config(size)
  config.task_loss_weights = ml_collections.ConfigDict(TASK_LOSS_WEIGHTS)
  config.train = train_config(size)
  config.eval = eval_config(size)
  config.mesh = mesh_config()
  config.distributed = distributed_config()
  return config.lock()
