"""Training and its parts.

  optim.py       learning-rate schedules and the optax chain.
  state.py       TrainState and create_train_state (created already sharded).
  step.py        the pure train_step and the StepCompiler (which also jits
                 mm_jax.eval.sums.eval_step).
  checkpoint.py  orbax checkpoints, resume order.
  preemption.py  SIGTERM/SIGINT as a flag; waiting on it during long phases.
  events.py      TensorBoard event files without TensorFlow.
  reporting.py   metric writers, metrics.jsonl, progress, NaN guard.
  loop.py        train_and_evaluate(config, workdir), the one entry point.
"""
