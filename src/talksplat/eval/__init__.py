"""Evaluation of trained avatars (``talksplat eval``): image quality, motion, lip sync, stability, speed.

    from talksplat.eval import EvalConfig, evaluate_subject
    metrics = evaluate_subject("subjects/anna")                          # held-out self-reconstruction
    metrics = evaluate_subject("subjects/anna", audio="other.wav")       # cross-driven

Metric functions (pure numpy/torch) are in :mod:`talksplat.eval.metrics`; docs/eval.md defines them.
"""

from talksplat.eval.runner import EvalConfig, StabilityConfig, default_out_dir, evaluate_subject

__all__ = ["EvalConfig", "StabilityConfig", "default_out_dir", "evaluate_subject"]
