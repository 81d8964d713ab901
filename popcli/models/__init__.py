"""Models: the registry, building a model for a recipe, and converting any module.

``registry`` (names popcli and user code register), ``external`` (import paths, entry points,
the artifact's record of a user's model), ``lookup`` (a name to its builder; ``list_models``),
``layers`` (the builders' layer factories), ``paper``/``resnet``/``tv`` (the architectures),
``build`` (a recipe's model with portable weights), ``hooks`` (global top-k, supermask sampling),
``policy`` (what becomes of every parameter of a converted model), ``factory``
(``create_model``/``subnetify``), ``describe`` (does a recipe build this model?). Imports
``errors``, ``rng``, ``nn``, ``methods`` and ``recipe``; training, data and artifacts live above.
"""

from .build import (build_architecture, build_model, count_params, init_density, init_weights, input_size,
                    regenerate_weights, weight_layers)
from .hooks import GlobalTopK, SupermaskSampler, enable_global_topk, masked_layers, refresh_global_masks, set_step
from .layers import layer_factories
from .lookup import canonical_arch, get_model_builder, list_models, model_aliases, model_descriptions
from .registry import register_model

__all__ = ["GlobalTopK", "SupermaskSampler", "build_architecture", "build_model", "canonical_arch", "count_params",
           "enable_global_topk", "get_model_builder", "init_density", "input_size", "init_weights", "layer_factories",
           "list_models", "masked_layers", "model_aliases", "model_descriptions", "refresh_global_masks",
           "regenerate_weights", "register_model", "set_step", "weight_layers"]
