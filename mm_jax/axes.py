"""The one dimension legend and the logical axis names of mm_jax.

Dimension letters (used in einsum strings, docstrings and shape comments):

  B  batch                    L  source (input) length    S  source length (alias)
  T  target length            D  model width (d_model)    N  attention heads
  H  head dim                 F  feed-forward / expert hidden width
  E  experts                  C  expert capacity          K  convolution kernel
  G  token groups (MoE)       V  vocabulary               X  spatial width (images)
  Y  spatial height (images)  M  mel bins (audio)         I  input channels

Logical axis names annotate parameters and activations in the model. The model
never names a mesh axis: the mapping from these names to mesh axes
(``data``, ``expert``, ``model``) is configuration data (``config.sharding``)
and is applied only in ``mm_jax.sharding``.
"""

# Activations.
BATCH = 'batch'          # B (and MoE groups G)
LENGTH = 'length'        # L / S / T
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
