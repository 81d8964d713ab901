"""What an artifact stores for a method beyond the kept-mask (docs/FORMAT.md, "Method state").

``encode(model, method, codec)`` -> (tensors, metadata) to add to the artifact;
``check(path, method, tensors, method_state, weights, masks)`` checks them against the
regenerated weights and decoded masks without a model (what ``popcli inspect`` and
``popcli.load`` both run) and ``apply(model, flips)`` gives a loaded model its signs.
Edge-popup, supermask: nothing.

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


def check(path, method: str, tensors: dict[str, np.ndarray], method_state: dict | None,
          weights: list[torch.Tensor], masks: list[np.ndarray]) -> list[np.ndarray] | None:
    """Check one mask's method state against its regenerated ``weights`` and decoded ``masks`` (bool
    [numel] per masked layer), needing no model: biprop's alphas recomputed and compared exactly,
    signed supermask's sign stream decoded and counted; ArtifactError if anything is wrong. The
    signed supermask's inverted bits per layer (bool [kept]), else None."""
    if method == "biprop":
        for i, recorded in enumerate(_state(path, method_state, len(weights), "alpha")):
            found = biprop.alpha(weights[i], torch.from_numpy(masks[i]))
            if not isinstance(recorded, (int, float)) or isinstance(recorded, bool) or found != recorded:
                raise ArtifactError(f"{path}: biprop alpha of masked layer {i} is {found!r} from the seed and mask, the "
                                    f"file records {recorded!r}; the file is corrupt or its generator differs")
        return None
    if method != "signed-supermask":
        if SIGNS in tensors or method_state is not None:
            raise ArtifactError(f"{path}: method state for another method in a {method} artifact (corrupt artifact)")
        return None
    inverted = [int(i) for i in _state(path, method_state, len(weights), "inverted")]
    if SIGNS not in tensors:
        raise ArtifactError(f"{path}: no {SIGNS!r} tensor: a signed-supermask artifact needs its signs (corrupt)")
    kept = [int(np.count_nonzero(m)) for m in masks]
    try:
        bits, ones = codecs.decode(tensors[SIGNS], kept, inverted, method_state.get("sign_codec", ""))
    except (codecs.CodecError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: signs: {err}") from None
    if ones != inverted:
        raise ArtifactError(f"{path}: the sign stream inverts {sum(ones)} weights, the metadata says {sum(inverted)} "
                            f"(corrupt artifact)")
    return np.split(bits, np.cumsum(kept)[:-1]) if kept else []


def apply(model, flips: list[np.ndarray] | None) -> None:
    """Give a loaded model's signed-supermask layers (kept-masks fixed) their checked signs."""
    if flips is None:
        return
    for layer, part in zip(_layers(model), flips):
        flipped = torch.zeros(layer.weight.numel(), dtype=torch.bool)
        flipped[layer.fixed_mask.reshape(-1).cpu()] = torch.from_numpy(part.copy())
        layer.rule.flipped = flipped.view(layer.weight.shape)


def method_tensors(method: str | None = None) -> tuple[str, ...]:
    """Tensor names this module may add to an artifact (of ``method``'s, when given)."""
    return (SIGNS,) if method in (None, "signed-supermask") else ()
