"""Measurement: the benchmark harness (train-step timing, the MoE alone, the
input pipeline, a dense Transformer anchor), the analytic FLOP count, the
profile summary and deviceless TPU compiles of a run's programs."""
