"""netslim schedules inside your own training loop.

- :class:`netslim.integrations.session.PruningSession`: the framework-free core (when to prune,
  how much, optimizer state handed over after structural steps);
- :mod:`netslim.integrations.hf_trainer`: a ``transformers.TrainerCallback``;
- :mod:`netslim.integrations.lightning`: a Lightning ``Callback``;
- :mod:`netslim.integrations.hf_pruned`: ``save_pretrained`` / ``from_pretrained`` for pruned
  Hugging Face models whose config cannot express the new shapes.

Nothing here is imported by ``import netslim``: each module imports its framework itself.
"""

from netslim.integrations.session import PruningSession

__all__ = ["PruningSession"]
