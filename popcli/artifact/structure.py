"""The model an artifact is checked against and loaded into, and the checks that it is the file's.

Two sources of that model: ``skeleton(art)``, the architecture the recipe names, built on the meta
device (structure only, nothing allocated) once the trust rule allows it (``check_trust``:
``models.trust``; a builder named in a file is imported only when it is popcli's own, an
installed entry point, or the caller opted in); or ``own_model(art, module)``, the caller's own
module (``popcli.load(path, model=...)``, as ``load_state_dict`` takes one), converted to subnet
layers with the file's policies when it has none. ``check_structure`` compares its masked layers
with the file's records (names and shapes, in order) and ``check_state`` every other tensor
(``state.*`` keys, shapes, dtypes; frozen parameters regenerated). Nothing here prints.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .. import methods
from ..methods import subspace
from ..errors import ArtifactError, PopcliError
from ..models import build_architecture, input_size, masked_layers
from ..models import trust
from ..models.external import require_source
from ..nn import SubnetMixin, to_subnet_layers
from .container import STATE, Artifact
from .frozen import fill_frozen


def builder(art: Artifact) -> trust.BuilderInfo:
    """The builder the file names (``models.trust``), found without importing anything."""
    return trust.describe(art.recipe.model.arch, art.header.model_source)


def check_trust(art: Artifact, trust_code: bool) -> None:
    """UntrustedCodeError unless the file's builder may be built here; ArtifactError for a file
    that records no builder (it loads only into the caller's module)."""
    info = builder(art)
    if info.kind == "none":
        raise ArtifactError(f"{art.path}: the file records no model builder (it was saved from a module popcli cannot "
                            f"rebuild by name); load it into that module: popcli.load(path, model=my_module)")
    trust.check(info, trust_code=trust_code, source=str(art.path))


def skeleton(art: Artifact) -> nn.Module:
    """The artifact's architecture on the meta device: structure only, nothing allocated. The caller
    has applied the trust rule (``check_trust``): a user's package is imported here."""
    try:
        require_source(art.recipe.model.arch, art.header.model_source)
    except PopcliError as err:
        raise ArtifactError(f"{art.path}: {err}") from None
    shape, classes = art.data_info["shape"], int(art.data_info["num_classes"])
    try:
        with torch.device("meta"):  # every tensor is filled later from the seed and the file
            return build_architecture(art.recipe.model, art.recipe.search, in_channels=int(shape[0]),
                                      image_size=input_size(shape), num_classes=classes)
    except PopcliError as err:  # already one line that names the fix
        raise ArtifactError(f"{art.path}: cannot build its model: {err}") from None
    except (ValueError, TypeError, RuntimeError, OverflowError, ZeroDivisionError) as err:
        raise ArtifactError(f"{art.path}: cannot build its model: {str(err).splitlines()[0][:160]}") from None


def own_model(art: Artifact, module: nn.Module) -> nn.Module:
    """The caller's ``module`` as the file's model: used as it is when it has subnet layers, else
    converted in place as the file's recipe says (its masked layers those the file records, every
    other Conv2d/Linear plain; the bias and norm policies; the method's layer rule)."""
    if not isinstance(module, nn.Module):
        raise ArtifactError(f"model= must be a torch.nn.Module (the architecture the file was saved from), "
                            f"not {type(module).__name__}")
    recipe = art.recipe
    # a module is masked when the file records it or a part of it (an attention's in_proj / out_proj)
    masked_names = {".".join(r.name.split(".")[:i]) for r in art.layers for i in range(1, r.name.count(".") + 2)}
    if not any(isinstance(m, SubnetMixin) for m in module.modules()):
        masked = methods.get_method(recipe.search.method).masked
        try:
            module = to_subnet_layers(module, recipe.search.density if masked else 1.0,
                                      keep_dense=lambda name, layer: name not in masked_names,
                                      nonaffine_norms=recipe.model.norms == "nonaffine",
                                      keep_biases=recipe.model.biases != "drop", device="meta")
        except PopcliError as err:
            raise ArtifactError(f"{art.path}: cannot convert the given model: {err}") from None
    methods.configure([layer for _, layer in masked_layers(module)], recipe.search.method)
    return module


def check_structure(model: nn.Module, art: Artifact, own: bool = False) -> list[nn.Module]:
    """The model's subnet layers, checked to be the file's (names and shapes, in order)."""
    layers = masked_layers(model)
    found = [(name, tuple(layer.weight.shape)) for name, layer in layers]
    wanted = [(r.name, r.shape) for r in art.layers]
    if found == wanted:
        return [layer for _, layer in layers]
    if not own:
        raise ArtifactError(f"{art.path}: the masked layers of {art.recipe.model.arch!r} built by this popcli differ "
                            f"from the file's ({len(found)} vs {len(wanted)} layers); was it written by another "
                            f"version of the architecture?")
    first = next(((a, b) for a, b in zip(found + [None] * len(wanted), wanted + [None] * len(found)) if a != b))
    said = lambda x: "no masked layer" if x is None else f"masked layer {x[0]!r} {list(x[1])}"  # noqa: E731
    raise ArtifactError(f"{art.path}: the given model does not match the file: the model has {said(first[0])} where "
                        f"the file has {said(first[1])} ({len(found)} vs {len(wanted)} masked layers); pass the module "
                        f"built as it was when saved")


def check_state(model: nn.Module, art: Artifact, own: bool = False) -> dict[str, np.ndarray]:
    """The file's ``state.`` tensors {model key: array}, checked: exactly the model's keys, shapes,
    dtypes (``own``: the model is the caller's, messages say so)."""
    skip = {f"{name}.{p}" if name else p for name, _ in masked_layers(model) for p in ("weight", "scores")}
    skip.add(subspace.Z_PARAM)  # the subspace method's z: its own entry, checked by methods.store
    skip.update(fill_frozen(model, art))  # frozen biases / parameters: regenerated from the seed, checked
    wanted = {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in skip}
    stored = {k[len(STATE):]: v for k, v in art.tensors.items() if k.startswith(STATE)}
    what = "the given model" if own or not art.recipe.model.arch else repr(art.recipe.model.arch)
    for key in sorted(set(wanted) ^ set(stored)):
        side = "missing from the file" if key in wanted else "unexpected in the file"
        raise ArtifactError(f"{art.path}: tensor {key!r} is {side} for {what} (corrupt artifact, or written by "
                            f"another version of the architecture)")
    for key, value in stored.items():
        if tuple(value.shape) != tuple(wanted[key].shape) or torch.from_numpy(value.reshape(-1)[:0]).dtype != wanted[key].dtype:
            raise ArtifactError(f"{art.path}: tensor {key!r} is {value.dtype} {list(value.shape)}, the model needs "
                                f"{wanted[key].dtype} {list(wanted[key].shape)} (corrupt artifact)")
    return stored
