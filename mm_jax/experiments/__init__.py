"""The paper's experiments on the built-in tiny suite: Tables 2-4
(``reproduce``, ``report``), A/B runs of config variants (``ablate``) and the
per-task diagnosis of a checkpoint (``diagnose``)."""
