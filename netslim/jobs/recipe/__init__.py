"""YAML recipes: prune → fine-tune (distillation) → quantize → compress/export as one run."""

from netslim.jobs.recipe.loader import Recipe, load_recipe, parse_recipe
from netslim.jobs.recipe.runner import run_recipe

__all__ = ["Recipe", "load_recipe", "parse_recipe", "run_recipe"]
