"""mm_jax: the MultiModel ("One Model To Learn Them All") in JAX/Flax."""

import setuptools

INSTALL_REQUIRES = [
    # The design card (SPEC §1).
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
    'tensorflow-cpu>=2.19',    # TFDS builders/decoding and clu's TF summary
                               # writer import TensorFlow; the CPU build is
                               # enough (JAX owns the accelerator).
    'tensorboard>=2.19',       # clu metric writers write TensorBoard events.
    'array-record>=0.8.1',     # tfds.data_source reads array_record files.
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
}

setuptools.setup(
    name='mm_jax',
    version='0.1.0',  # keep equal to mm_jax.__version__
    description=__doc__,
    packages=setuptools.find_packages(include=['mm_jax', 'mm_jax.*',
                                               'configs']),
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
