"""Frozen parameters (biases or other parameters under a ``frozen`` policy): regenerated from the
seed at load, never stored; the file records each one's name, shape and SHA-256 (``frozen``).

``frozen_records(model, recipe)`` is what the writer records; ``fill_frozen(model, art)``
regenerates them in a rebuilt model and checks each against the file's record. The draws
themselves are ``models.policy``'s (``init_params``). Nothing here reads files.
"""

from __future__ import annotations

import torch.nn as nn

from .. import rng
from ..errors import ArtifactError
from ..models import policy
from .container import Artifact


def frozen_records(model: nn.Module, recipe) -> list[dict]:
    """[{name, shape, sha256}] of the model's frozen parameters (``policy``: regenerated, not stored)."""
    tensors = dict(model.named_parameters())
    return [{"name": name, "shape": list(tensors[name].shape), "sha256": rng.weight_sha256(tensors[name])}
            for name in policy.frozen_names(model, recipe.model.biases, recipe.model.params)]


def fill_frozen(model: nn.Module, art: Artifact) -> list[str]:
    """Regenerate the frozen parameters of a rebuilt model from the seed, each checked against the
    file's ``frozen`` entry (optional: absent means none); their names."""
    recorded = {r.get("name"): r for r in art.header.frozen}
    biases, params = art.recipe.model.biases, art.recipe.model.params
    names = policy.frozen_names(model, biases, params)
    if sorted(names) != sorted(recorded):
        raise ArtifactError(f"{art.path}: the file's frozen parameters differ from the model's ({len(recorded)} vs "
                            f"{len(names)}); was it written by another version of the architecture?")
    if names:
        policy.init_params(model, art.recipe.seed, biases, params, only_frozen=True)
    tensors = dict(model.named_parameters())
    for name in names:
        if rng.weight_sha256(tensors[name]) != recorded[name].get("sha256"):
            raise ArtifactError(f"{art.path}: frozen parameter {name!r} regenerated from the seed does not match the "
                                f"stored checksum (corrupt artifact, or another generator)")
    return names
