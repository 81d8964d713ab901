"""What an artifact stores for a method beyond the kept-mask (docs/FORMAT.md, "Method state").

``encode(model, method, codec)`` -> (tensors, metadata) to add to the artifact;
``check(path, method, tensors, method_state, weights, masks, recipe)`` checks them against the
regenerated weights and decoded masks without a model (what ``popcli inspect`` and
``popcli.load`` both run) and ``apply(model, state)`` gives a loaded model its signs (signed
supermask) or its subspace coordinates. Edge-popup, supermask: nothing.

- biprop: metadata ``method_state`` = {"alpha": [float, per masked layer]}: the float32 alpha of
  each layer, recomputed on load from the regenerated weights and the mask and compared exactly.
- signed-supermask: tensor ``method.signs``: a second coded mask stream with one bit per KEPT
  weight (1: sign inverted, t = -1), layers concatenated in order, coded like the kept-mask stream
  (per layer, with ``sizes`` = kept counts and ``kept`` = inverted counts); metadata
  ``method_state`` = {"sign_codec": "packbits" | "rans", "inverted": [int, per masked layer]}.
  kept-stream + sign-stream = the ternary mask, and their entropies add up to its entropy.
- subspace: tensor ``subspace.z``: z, float32 or float16 [d], exactly the values the model uses;
  metadata ``method_state`` = {"projection": "fastfood-v1", "dim": d, "dtype": "float32" |
  "float16", "weights_sha256": SHA-256 of the effective weights w0 + P z (float32 little-endian,
  masked layers concatenated in order)}: recomputed from the seed and z on every read.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import codecs
from ..errors import ArtifactError
from ..storage.strict_json import compact
from . import biprop, subspace

SIGNS = "method.signs"
Z = "subspace.z"
STATE_KEY = "method_state"


def _layers(model):
    from ..nn import SubnetMixin

    return [m for m in model.modules() if isinstance(m, SubnetMixin)]


def encode(model, method: str, codec: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    layers = _layers(model)
    if method == "biprop":
        state = {"alpha": [layer.rule.layer_state(layer)["alpha"] for layer in layers]}
        return {}, {STATE_KEY: compact(state)}
    if method == "subspace":
        sub = model._popcli_subspace
        z = subspace.stored_z(model, sub.dtype)
        effective = [layer.effective_weight().detach() for layer in layers]
        state = {"projection": subspace.PROJECTION, "dim": int(z.size), "dtype": sub.dtype,
                 "weights_sha256": subspace.weights_sha256(effective)}
        return {Z: z}, {STATE_KEY: compact(state)}
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
          weights: list[torch.Tensor], masks: list[np.ndarray], recipe=None):
    """Check one mask's method state against its regenerated ``weights`` and decoded ``masks`` (bool
    [numel] per masked layer), needing no model: biprop's alphas recomputed and compared exactly,
    signed supermask's sign stream decoded and counted, subspace's z checked and w0 + P z hashed
    (``recipe``: the file's, for its seed and subspace keys); ArtifactError if anything is wrong.
    The signed supermask's inverted bits per layer (bool [kept]), the subspace's ``Coordinates``,
    else None."""
    if method == "subspace":
        return _check_subspace(path, tensors, method_state, weights, masks, recipe)
    if method == "biprop":
        for i, recorded in enumerate(_state(path, method_state, len(weights), "alpha")):
            found = biprop.alpha(weights[i], torch.from_numpy(masks[i]))
            if not isinstance(recorded, (int, float)) or isinstance(recorded, bool) or found != recorded:
                raise ArtifactError(f"{path}: biprop alpha of masked layer {i} is {found!r} from the seed and mask, the "
                                    f"file records {recorded!r}; the file is corrupt or its generator differs")
        return None
    if method != "signed-supermask":
        if SIGNS in tensors or Z in tensors or method_state is not None:
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


class Coordinates:
    """A subspace artifact's checked z (float32 [d] holding the stored values) and how to use it."""

    def __init__(self, seed: int, z: torch.Tensor, dtype: str):
        self.seed, self.z, self.dtype = seed, z, dtype


def _check_subspace(path, tensors, state, weights, masks, recipe) -> Coordinates:
    for key in ("projection", "dim", "dtype", "weights_sha256"):
        if not isinstance(state, dict) or key not in state:
            raise ArtifactError(f"{path}: metadata {STATE_KEY!r} has no valid {key!r} (corrupt artifact)")
    if state["projection"] != subspace.PROJECTION:
        raise ArtifactError(f"{path}: subspace projection {str(state['projection'])[:30]!r} is not one this popcli "
                            f"knows ({subspace.PROJECTION}); upgrade popcli")
    search = recipe.search
    if state["dim"] != search.subspace_dim or state["dtype"] != search.subspace_dtype:
        raise ArtifactError(f"{path}: {STATE_KEY!r} dim/dtype differ from the recipe's search.subspace_dim/"
                            f"search.subspace_dtype (corrupt artifact)")
    z = tensors.get(Z)
    wanted = np.dtype(state["dtype"])
    if z is None or z.dtype != wanted or z.shape != (search.subspace_dim,):
        found = "no" if z is None else f"a {z.dtype} {list(z.shape)}"
        raise ArtifactError(f"{path}: {found} {Z!r} tensor, expected {wanted} [{search.subspace_dim}] (corrupt artifact)")
    if not np.isfinite(z).all():
        raise ArtifactError(f"{path}: {Z!r} holds a NaN or infinite coordinate (corrupt artifact)")
    if not all(m.all() for m in masks):
        raise ArtifactError(f"{path}: a subspace artifact keeps every weight, its masks do not (corrupt artifact)")
    values = torch.from_numpy(z.astype(np.float32))
    effective = subspace.effective_weights(recipe.seed, weights, values, state["dtype"])
    if subspace.weights_sha256(effective) != state["weights_sha256"]:
        raise ArtifactError(f"{path}: the weights w0 + P z computed from the seed and {Z!r} do not match the stored "
                            f"checksum; the file is corrupt or this machine's projection differs (please report it)")
    return Coordinates(recipe.seed, values, state["dtype"])


def apply(model, flips) -> None:
    """Give a loaded model's signed-supermask layers (kept-masks fixed) their checked signs, or a
    subspace model its checked z (``Coordinates``: the projection regenerated from the seed)."""
    if flips is None:
        return
    if isinstance(flips, Coordinates):
        subspace.attach(model, flips.seed, int(flips.z.numel()), flips.dtype, z=flips.z)
        getattr(model, subspace.Z_PARAM).requires_grad_(False)
        return
    for layer, part in zip(_layers(model), flips):
        flipped = torch.zeros(layer.weight.numel(), dtype=torch.bool)
        flipped[layer.fixed_mask.reshape(-1).cpu()] = torch.from_numpy(part.copy())
        layer.rule.flipped = flipped.view(layer.weight.shape)


def method_tensors(method: str | None = None) -> tuple[str, ...]:
    """Tensor names this module may add to an artifact (of ``method``'s, when given)."""
    names = (SIGNS,) if method in (None, "signed-supermask") else ()
    return names + ((Z,) if method in (None, "subspace") else ())
