"""Evaluation: host metrics (``metrics``), the per-task runner (``evaluate``),
the passes during training (``evaluator``).

  from mm_jax.eval import evaluate
  metrics, samples = evaluate.evaluate_task(model, params, task, batches,
                                            vocab, config.eval, step_fn)

Decoding itself (beam search, greedy, class top-k) is ``mm_jax.eval.decode``.
"""
