"""Training and its parts.

  optim.py       learning-rate schedules and the optax chain.
  losses.py      label-smoothed cross-entropy and metric counts (float32).
  state.py       TrainState and create_train_state (created already sharded).
  step.py        pure train_step / eval_step and the StepCompiler.
  checkpoint.py  orbax checkpoints, resume order, SIGTERM.
  events.py      TensorBoard event files without TensorFlow.
  reporting.py   metric writers, metrics.jsonl, progress, NaN guard.
  loop.py        train_and_evaluate(config, workdir), the one entry point.
"""
