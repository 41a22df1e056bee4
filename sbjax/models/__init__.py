"""Flax models exposed as pure init/apply functions through a registry.

from sbjax.models import make_model, ModelConfig
model = make_model(ModelConfig(name="fcn", width=100, depth=1))
variables = model.init(key, x_example)
logits, updates = model.apply(variables, x, train=False)
"""

from sbjax.models.features import features_fn, first_layer_kernel, head_params
from sbjax.models.initializers import INIT_SCHEMES, scale_params
from sbjax.models.registry import MODEL_NAMES, Model, ModelConfig, make_model

__all__ = [
    "INIT_SCHEMES",
    "MODEL_NAMES",
    "Model",
    "ModelConfig",
    "features_fn",
    "first_layer_kernel",
    "head_params",
    "make_model",
    "scale_params",
]
