"""What an artifact stores for a method beyond the kept-mask (docs/FORMAT.md, "Method state").

``encode(model, method, codec)`` -> (tensors, metadata) to add to the artifact;
``restore(path, model, method, tensors, method_state)`` applies them to a loaded model (its subnet
layers already hold their kept-masks; ``method_state``: the parsed ``method_state`` entry) and
checks them. Edge-popup, supermask: nothing.

- biprop: metadata ``method_state`` = {"alpha": [float, per masked layer]}: the float32 alpha of
  each layer, recomputed on load from the regenerated weights and the mask and compared exactly.
- signed-supermask: tensor ``method.signs``: a second coded mask stream with one bit per KEPT
  weight (1: sign inverted, t = -1), layers concatenated in order, coded like the kept-mask stream
  (per layer, with ``sizes`` = kept counts and ``kept`` = inverted counts); metadata
  ``method_state`` = {"sign_codec": "packbits" | "rans", "inverted": [int, per masked layer]}.
  kept-stream + sign-stream = the ternary mask, and their entropies add up to its entropy.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import codecs
from ..errors import ArtifactError
from ..storage.strict_json import compact
from . import biprop

SIGNS = "method.signs"
STATE_KEY = "method_state"


def _layers(model):
    from ..nn import SubnetMixin

    return [m for m in model.modules() if isinstance(m, SubnetMixin)]


def encode(model, method: str, codec: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    layers = _layers(model)
    if method == "biprop":
        state = {"alpha": [layer.rule.layer_state(layer)["alpha"] for layer in layers]}
        return {}, {STATE_KEY: compact(state)}
    if method != "signed-supermask":
        return {}, {}
    kept, flips = [], []
    for layer in layers:
        keep = layer.mask().detach().cpu().reshape(-1).numpy()
        flipped = layer.rule.flipped_mask(layer).detach().cpu().reshape(-1).numpy()
        kept.append(int(keep.sum()))
        flips.append(flipped[keep])  # one bit per kept weight, flat order
    bits = np.concatenate(flips) if flips else np.zeros(0, dtype=np.bool_)
    chosen, data = codecs.encode_best(bits, kept, codec)
    state = {"sign_codec": chosen, "inverted": [int(f.sum()) for f in flips]}
    return {SIGNS: data}, {STATE_KEY: compact(state)}


def _state(path, method_state: dict | None, n_layers: int, key: str) -> list:
    try:
        values = method_state[key]
    except (KeyError, TypeError):
        raise ArtifactError(f"{path}: metadata {STATE_KEY!r} has no valid {key!r} (corrupt artifact)") from None
    if not isinstance(values, list) or len(values) != n_layers:
        raise ArtifactError(f"{path}: metadata {STATE_KEY!r} {key!r} does not list every masked layer (corrupt artifact)")
    return values


def restore(path, model, method: str, tensors: dict[str, np.ndarray], method_state: dict | None) -> None:
    """Apply (signed) and check (biprop) the method state of a loaded model; ArtifactError if wrong."""
    layers = _layers(model)
    if method == "biprop":
        for layer, recorded in zip(layers, _state(path, method_state, len(layers), "alpha")):
            found = biprop.alpha(layer.weight, layer.mask())
            if not isinstance(recorded, (int, float)) or found != recorded:
                raise ArtifactError(f"{path}: biprop alpha of a layer is {found!r} from the seed and mask, the file "
                                    f"records {recorded!r}; the file is corrupt or its generator differs")
    elif method == "signed-supermask":
        inverted = _state(path, method_state, len(layers), "inverted")
        if SIGNS not in tensors:
            raise ArtifactError(f"{path}: no {SIGNS!r} tensor: a signed-supermask artifact needs its signs (corrupt)")
        kept = [int(layer.mask().sum()) for layer in layers]
        try:
            bits, ones = codecs.decode(tensors[SIGNS], kept, [int(i) for i in inverted],
                                       method_state.get("sign_codec", ""))
        except (codecs.CodecError, TypeError, ValueError) as err:
            raise ArtifactError(f"{path}: signs: {err}") from None
        if ones != [int(i) for i in inverted]:
            raise ArtifactError(f"{path}: the sign stream inverts {sum(ones)} weights, the metadata says "
                                f"{sum(int(i) for i in inverted)} (corrupt artifact)")
        for layer, part in zip(layers, np.split(bits, np.cumsum(kept)[:-1]) if kept else []):
            flipped = torch.zeros(layer.weight.numel(), dtype=torch.bool)
            flipped[layer.mask().reshape(-1).cpu()] = torch.from_numpy(part.copy())
            layer.rule.flipped = flipped.view(layer.weight.shape)
    elif SIGNS in tensors or method_state is not None:
        raise ArtifactError(f"{path}: method state for another method in a {method} artifact (corrupt artifact)")


def method_tensors() -> tuple[str, ...]:
    """Tensor names this module may add to an artifact."""
    return (SIGNS,)
