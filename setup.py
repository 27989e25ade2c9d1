"""mm_jax: the MultiModel ("One Model To Learn Them All") in JAX/Flax."""

import setuptools

INSTALL_REQUIRES = [
    'jax>=0.10.2',
    'flax>=0.12.8',
    'optax>=0.2.8',
    'orbax-checkpoint>=0.12.8',
    'tensorflow-datasets>=4.9.10',
    'sentencepiece>=0.2.0',
    'ml-collections>=1.1.0',
    'clu>=0.0.12',
    'sacrebleu>=2.4',
    'absl-py>=2.1',
    # What those need at run time but do not declare themselves:
    'tensorboard>=2.19',       # its protos and record writer: event files
                               # without TensorFlow (mm_jax/train/events.py).
    'array-record>=0.8.1',     # tfds.data_source reads array_record files.
    'h5py>=3.10',              # tfds imports its older dataset builders
                               # (wmt14_translate, coco_captions) in one
                               # loop that stops at the first ImportError,
                               # h5py's (nearest_neighbors); TensorFlow
                               # used to bring h5py in.
    # No TensorFlow (~1.3 GB, ~4.5 s to import): training, evaluation,
    # inference, the tiny suite and TensorBoard events do without it.
    # Earned extras:
    'grain>=0.2.18',           # checkpointable, deterministic input pipeline.
    'espeakng-loader>=0.2.4',  # ships libespeak-ng + voices: tiny speech task.
    'numpy>=1.26',
    'pillow>=10',              # image decoding / drawing in the tiny suite.
    'matplotlib>=3.8',         # launch/reproduce.py and the notebook plot.
]

EXTRAS = {
    'test': ['pytest>=8', 'pytest-xdist>=3.5', 'nbclient>=0.10',
             'ipykernel>=6'],
    # Preparing real TFDS datasets (`tfds build`, `tfds convert_format`) and
    # reading those with audio features (LibriSpeech) import TensorFlow; the
    # CPU build is enough (JAX owns the accelerator).
    'tfds-build': ['tensorflow-cpu>=2.19'],
    # The TPU compiler, for `launch/aot_check.py` (deviceless compiles for
    # pod topologies on a CPU host); the pin of jax 0.10.2's `tpu` extra.
    'tpu-aot': ['libtpu==0.0.42.*'],
}

setuptools.setup(
    name='mm_jax',
    version='0.1.0',  # keep equal to mm_jax.__version__
    description=__doc__,
    # The experiment files (configs/) stay in the repository, loaded by
    # path; no top-level 'configs' package is installed.
    packages=setuptools.find_packages(include=['mm_jax', 'mm_jax.*']),
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
