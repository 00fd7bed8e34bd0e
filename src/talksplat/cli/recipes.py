"""``talksplat recipes [NAME]``: the registered recipes and the paper each implements; with NAME, its
stages, loss terms and every config field with its default."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("recipes", help="list the recipes (one per paper), or describe one",
                              description="List the registered recipes; with NAME, its config fields and defaults "
                                          "(settable with `talksplat train --set KEY=VALUE`).")
    p.add_argument("name", nargs="?", help="a recipe to describe")
    p.set_defaults(func=run)


def run(args) -> int:
    from talksplat.engine.config import describe_fields
    from talksplat.recipes import RECIPES, recipe_class

    if args.name is None:
        width = max(len(n) for n in RECIPES)
        for name, cls in sorted(RECIPES.items()):
            print(f"{name:<{width}}  {cls.paper}")
        return 0
    cls = recipe_class(args.name)
    cfg = cls.Config()
    print(f"{cls.name}: {cls.paper}")
    stages = ", ".join(f"{name} ({n})" for name, n in vars(cfg.iterations).items())
    print(f"stages (iterations): {stages}")
    print(f"loss terms (weight): {', '.join(f'{k} ({v})' for k, v in vars(cfg.losses).items())}")
    presets = getattr(cls, "presets", {})
    if presets:
        print("quality presets: " + "; ".join(f"{q}: {o or 'the defaults'}" for q, o in presets.items()))
    print("config fields (talksplat train --set KEY=VALUE):")
    for line in describe_fields(cfg):
        print(f"  {line}")
    return 0
