"""A small explicit model registry, in the style of torchvision's.

Builder contract. Every registered builder is called with keyword arguments only:

    builder(*, in_channels: int, image_size: int, num_classes: int, width: float,
            hidden: list[int], batchnorm: bool,
            conv_layer, linear_layer, norm_layer, density: float | None) -> nn.Module

- ``in_channels``, ``image_size`` and ``num_classes`` follow the dataset; ``image_size`` is an int
  (H = W) for square images and an (H, W) tuple otherwise. A builder that names ``input_shape``
  (or takes ``**kwargs``) also gets ``input_shape=(C, H, W)``, the spelling of
  ``popcli.create_model`` and ``popcli.subnetify``.
- ``width`` multiplies channel / unit counts (not the output layer); ``hidden`` is the fc MLP's
  hidden sizes; ``batchnorm`` asks fc/convN for BN after hidden layers. Builders ignore the
  arguments that do not apply to them and raise ModelError for values they cannot honour.
- ``conv_layer(in, out, kernel_size, stride=1, padding=0)`` and ``linear_layer(in, out)`` build
  the weight layers: SubnetConv2d/SubnetLinear at the method's density for edge-popup, plain
  bias-free trainable Conv2d/Linear for the dense baseline. ``norm_layer(num_features)`` builds
  a 2-d batch norm (non-affine); MLP layers use ``NonAffineBatchNorm1d`` built in the builder.
- ``density`` is the density the factories were made with, or None for the dense baseline. It
  is redundant for builders that use the factories; builders that convert a foreign definition
  they cannot pass factories into (torchvision) use ``nn.to_subnet_layers(model, density)`` when it is a
  number, and plain layers when it is None. ``layers.layer_factories(density)`` makes all four.

Builders draw no random numbers: weights start at zero and scores at zero;
``popcli.models.init_weights`` fills both from the seed afterwards. Looking a name up among
these, the entry points and import paths is ``lookup``'s job; this module only holds the names.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from ..errors import ModelError

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[Builder, str]] = {}
_ALIASES: dict[str, str] = {}  # an old name -> the registered one (accepted for one release, then removed)


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator: register the builder as ``name`` with a one-line ``description``."""
    if name in _REGISTRY:  # checked at decoration time, so a clash fails at import
        raise ModelError(f"model {name!r} is already registered; registered: {', '.join(sorted(_REGISTRY))}")

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ModelError(f"model {name!r} is already registered; registered: {', '.join(sorted(_REGISTRY))}")
        _REGISTRY[name] = (builder, description)
        return builder

    return decorate


def accepts(builder: Builder, name: str) -> bool:
    """Whether ``builder`` takes the keyword ``name`` (it names it, or takes ``**kwargs``)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def register_alias(old: str, name: str) -> None:
    """Accept ``old`` for the registered ``name`` (a renamed model keeps working for a release)."""
    if old in _REGISTRY or old in _ALIASES or name not in _REGISTRY:
        raise ModelError(f"cannot alias {old!r} to {name!r}: the old name is taken or the new one is not registered")
    _ALIASES[old] = name


def canonical_name(name: str) -> str:
    """The registered name ``name`` stands for (itself unless it is an old alias)."""
    return _ALIASES.get(name, name)


def aliases() -> dict[str, str]:
    """{old name: registered name} of the renamed models still accepted."""
    return dict(_ALIASES)


def is_registered(name: str) -> bool:
    """Whether ``name`` is in this process's registry (popcli's models and ``register_model`` calls,
    old aliases included)."""
    return canonical_name(name) in _REGISTRY


def registered_builder(name: str) -> Builder | None:
    """The builder registered as ``name`` (or an alias of it) in this process, or None (entry
    points not consulted)."""
    name = canonical_name(name)
    return _REGISTRY[name][0] if name in _REGISTRY else None


def registered() -> dict[str, str]:
    """{name: one-line description} of this process's registry, in registration order."""
    return {name: description for name, (_, description) in _REGISTRY.items()}
