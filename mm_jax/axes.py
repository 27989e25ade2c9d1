"""The one dimension legend and the logical axis names of mm_jax.

Dimension letters (used in einsum strings, docstrings and shape comments;
each letter means one thing everywhere):

  B  batch                          L  source (input) length
  T  target length                  D  model width (d_model)
  N  attention heads                H  head dim
  F  feed-forward / expert hidden   V  vocabulary
  E  experts                        C  expert capacity (slots per group)
  G  token groups (MoE)             S  tokens per group (MoE)
  K  convolution kernel taps        P  groups of a grouped convolution
  Y  spatial height (images)        X  spatial width (images)
  A  audio frames                   M  mel bins (audio)
  I  input channels (image colours, audio features, a convolution's input)
  O  output channels of a convolution

Lower-case letters in an einsum are local to it (e.g. ``k``, a token's
routing choices in the MoE, since ``K`` is the kernel). Logical axis names
annotate parameters and activations in the model. The model never names a
mesh axis: the mapping from these names to mesh axes (``data``, ``expert``,
``model``) is configuration data (``config.mesh``) and is applied only in
``mm_jax.sharding``.
"""

# Activations.
BATCH = 'batch'          # B (and MoE groups G)
LENGTH = 'length'        # L / T / A (and S within a MoE group)
SPATIAL = 'spatial'      # image / spectrogram rows and columns
EMBED = 'embed'          # D on activations and parameters
HEADS = 'heads'          # N
KV = 'kv'                # H
MLP = 'mlp'              # F
EXPERT = 'expert'        # E
CAPACITY = 'capacity'    # C
VOCAB = 'vocab'          # V
CLASSES = 'classes'      # categorical output classes
KERNEL = 'kernel'        # K (conv kernel taps)
CHANNELS = 'channels'    # conv channels that are not D (image/audio stems)
TASK = 'task'            # task-token / target-space table rows

ALL = (BATCH, LENGTH, SPATIAL, EMBED, HEADS, KV, MLP, EXPERT, CAPACITY, VOCAB,
       CLASSES, KERNEL, CHANNELS, TASK)
