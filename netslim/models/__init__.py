"""Model sources: the reference zoo (and model specs, in ``netslim.models.spec``)."""

from netslim.models.zoo import (
    ZOO,
    get_zoo_model,
    lenet5,
    lenet300,
    resnet20,
    resnet56,
    vgg_small,
)

__all__ = ["ZOO", "get_zoo_model", "lenet5", "lenet300", "resnet20", "resnet56", "vgg_small"]
