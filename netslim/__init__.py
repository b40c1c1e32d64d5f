"""netslim: model pruning and network slimming for PyTorch.

import netslim
model = netslim.build_model("zoo:lenet300")
netslim.prune_(model, netslim.Unstructured(ratio=0.9))
netslim.save(model, "out/")            # safetensors + JSON, no pickles
same = netslim.load("out/")
"""

from netslim.api import build_model, load, prune_, save
from netslim.errors import NetslimError

__version__ = "0.1.0"

__all__ = ["NetslimError", "build_model", "load", "prune_", "save"]


def __getattr__(name: str):
    # Config classes are imported lazily so `import netslim` stays cheap and method packages stay
    # independent of each other.
    lazy = {
        "Unstructured": "netslim.unstructured.config",
        "Channels": "netslim.structural.config",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'netslim' has no attribute {name!r}")
