"""Recipes: one per paper's method, each a thin composition of the shared parts.

A recipe class takes (SubjectData, config) and provides ``total_iterations``, ``stage(step)``,
``train_step(step) -> stats``, ``evaluate(frames)``, ``render(t, ...)``, ``state_tensors()`` and
``load_state_tensors()``; ``talksplat.train.trainer`` runs any of them.
"""

RECIPES = {
    "talkinggaussian": ("talksplat.recipes.talkinggaussian", "TalkingGaussian", "TalkingGaussianConfig"),
}
