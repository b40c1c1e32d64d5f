"""netslim: model pruning and network slimming for PyTorch.

import netslim
model = netslim.build_model("zoo:lenet300")
netslim.prune_(model, netslim.Unstructured(ratio=0.9))
netslim.save(model, "out/")            # safetensors + JSON, no pickles
same = netslim.load("out/")
"""

from netslim._runtime import retain_freed_memory
from netslim._version import __version__
from netslim.api import build_model, load, prune_, save
from netslim.errors import NetslimError, NetslimWarning

__all__ = [
    "NetslimError",
    "NetslimWarning",
    "__version__",
    "build_model",
    "load",
    "prune_",
    "retain_freed_memory",
    "save",
]


def __getattr__(name: str):
    # Config classes are imported on first use so `import netslim` stays cheap.
    if name == "Unstructured":
        from netslim.unstructured.config import Unstructured

        return Unstructured
    if name == "Channels":
        from netslim.structural.config import Channels

        return Channels
    raise AttributeError(f"module 'netslim' has no attribute {name!r}")
