"""Recipes: one per paper's method, each a composition of the shared parts (see engine.contract).

``RECIPES`` maps each registered recipe's name to its class; a new paper is one new file here plus
one line below. ``load_avatar`` and ``train`` resolve recipe names for the layers above.
"""

from __future__ import annotations

from pathlib import Path

from talksplat.engine.avatar import Avatar
from talksplat.engine.avatar import load_avatar as _load_avatar
from talksplat.engine.contract import Recipe
from talksplat.errors import UsageError
from talksplat.recipes.gaussianflametalk import GaussianFlameTalk
from talksplat.recipes.synctalkpp import SyncTalkPP
from talksplat.recipes.talkinggaussian import TalkingGaussian
from talksplat.recipes.unigs import UniGS

RECIPES: dict[str, type[Recipe]] = {cls.name: cls for cls in (TalkingGaussian, UniGS, GaussianFlameTalk, SyncTalkPP)}
DEFAULT_RECIPE = TalkingGaussian.name


def recipe_class(name: str) -> type[Recipe]:
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))} "
                         "(`talksplat recipes` lists them)")
    return RECIPES[name]


def load_avatar(path: Path, recipe: str | None = None, run: Path | None = None) -> Avatar:
    """The newest checkpoint of a run as an Avatar: ``path`` is a subject (its only run, or ``recipe``'s)
    or a run folder; ``run`` names the run folder explicitly."""
    if recipe is not None:
        recipe_class(recipe)
    return _load_avatar(path, RECIPES, recipe, run)


__all__ = ["DEFAULT_RECIPE", "RECIPES", "load_avatar", "recipe_class"]
