"""The engine: the recipe contract, the training loop, checkpoints, runs and the Avatar.

Recipes (``talksplat.recipes``) declare what a paper's method is; the engine trains any of them and
loads any trained run into an :class:`~talksplat.engine.avatar.Avatar` for rendering. See
docs/architecture.md.
"""
