"""Saving and loading pruned models without pickled Python objects."""

from netslim.io.artifact import load, save

__all__ = ["load", "save"]
