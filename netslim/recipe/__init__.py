"""YAML recipes: prune → fine-tune (distillation) → quantize → compress/export as one run."""

from netslim.recipe.loader import Recipe, load_recipe, parse_recipe
from netslim.recipe.runner import run_recipe

__all__ = ["Recipe", "load_recipe", "parse_recipe", "run_recipe"]
