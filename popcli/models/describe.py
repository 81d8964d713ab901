"""Whether a recipe describes a model: the one check behind ``popcli.save`` of a self-describing
model and ``popcli.search`` of a user's own model.

An artifact stores a recipe instead of a model's code, and a loader rebuilds the model from it;
so before a model is saved (or searched into a run whose recipe an export will use), the
recipe's architecture is built on the meta device (shapes only, nothing allocated) and compared
with the model: the subnet layers (names and weight shapes, in order), then every state tensor
(names and shapes). ``difference`` says what differs first, or None. Nothing here prints.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from .build import build_architecture, input_size
from .hooks import masked_layers


class Difference(NamedTuple):
    kind: str  # "no_subnets" (the model has none, the recipe's has some), "masked" or "tensor"
    detail: str  # what differs, for a message: "masked layer ('fc1', (300, 784)) vs ('fc1', (100, 784))"


def build_meta(recipe, shape, num_classes: int) -> nn.Module:
    """The recipe's architecture for inputs ``shape`` [C, H, W] on the meta device (no storage)."""
    with torch.device("meta"):
        return build_architecture(recipe.model, recipe.search, in_channels=int(shape[0]),
                                  image_size=input_size(shape), num_classes=int(num_classes))


def _tensors(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}


def difference(model: nn.Module, recipe, shape, num_classes: int) -> Difference | None:
    """The first difference between ``model`` and what ``recipe`` builds for ``shape`` and
    ``num_classes`` (ModelError if it builds nothing), or None when they are the same model."""
    built = build_meta(recipe, shape, num_classes)
    ours = [(n, tuple(m.weight.shape)) for n, m in masked_layers(model)]
    theirs = [(n, tuple(m.weight.shape)) for n, m in masked_layers(built)]
    if theirs and not ours:
        return Difference("no_subnets", f"the model has no subnet layers, the recipe's has {len(theirs)}")
    if ours != theirs:
        first = next((a, b) for a, b in zip(ours + [None] * len(theirs), theirs + [None] * len(ours)) if a != b)
        return Difference("masked", f"masked layer {first[0]} vs {first[1]} in the recipe's architecture")
    mine, wanted = _tensors(model), _tensors(built)
    for name in [*mine, *(n for n in wanted if n not in mine)]:
        if mine.get(name) != wanted.get(name):
            if name in mine and name in wanted:
                return Difference("tensor", f"tensor {name!r} is {list(mine[name])} here and {list(wanted[name])} in "
                                            f"the recipe's architecture")
            return Difference("tensor", f"tensor {name!r} is in one and not the other")
    return None
