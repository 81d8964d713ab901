"""The library entry points users of timm expect: ``create_model`` and ``subnetify``; models that describe themselves.

``create_model(arch, density=..., num_classes=..., in_chans=..., image_size=...)`` builds a
registered model (``popcli models``) ready to search, and ``subnetify(module, density, ...)``
converts any torch module (its weights replaced by popcli's portable draws from ``seed``). Both
attach ``model.popcli_description`` (the recipe and data description an artifact needs, so
``popcli.save(model, path)`` takes no recipe) and ``model.popcli_report`` (``policy.ConversionReport``).
A subnetified module describes itself only when ``arch=`` names the builder that rebuilds it.
``description(model, recipe, data_info)`` is what ``popcli.save`` uses (checked by
``describe.difference``). ``popcli/__init__.py`` re-exports both as ``popcli.create_model`` and
``popcli.subnetify``. Nothing here prints.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn

from ..errors import ModelError, PopcliError
from ..nn import KeepDense, to_subnet_layers
from ..recipe import Recipe, from_dict
from . import policy
from .build import build_model, init_weights
from .describe import difference
from .hooks import masked_layers
from .trust import NO_BUILDER


def _data_info(in_chans: int, image_size: int, num_classes: int, mean, std, class_names) -> dict[str, Any]:
    info: dict[str, Any] = {"shape": [int(in_chans), int(image_size), int(image_size)], "num_classes": int(num_classes),
                            "dataset": None}  # not trained on a popcli dataset: preprocessing is what is given here
    for key, value in (("mean", mean), ("std", std)):
        if value is not None:
            info[key] = [float(v) for v in value]
    if class_names is not None:
        info["class_names"] = [str(c) for c in class_names]
    return info


def _own_data(in_chans: int, image_size: int, num_classes: int) -> dict[str, Any]:
    """The recipe's data section of a model built outside a search: synthetic data of its shape
    (what ``popcli export --onnx`` checks parity on when no real data is named)."""
    return {"dataset": "synthetic", "shape": [int(in_chans), int(image_size), int(image_size)],
            "num_classes": int(num_classes)}


def create_model(arch: str, *, density: float = 0.5, num_classes: int = 10, in_chans: int = 3, image_size: int = 32,
                 init: str = "signed_constant", seed: int = 0, method: str = "edge-popup", width: float = 1.0,
                 hidden: Sequence[int] = (300, 100), batchnorm: bool = False, biases: str = "drop",
                 norms: str = "nonaffine", params: str = "train", global_topk: bool = False, dense_first: bool = False,
                 dense_last: bool = False, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 class_names: Sequence[str] | None = None) -> nn.Module:
    """A registered architecture with portable random weights and scores, in train mode, that
    ``popcli.save`` can write without a recipe. Arguments as the recipe's model/search keys;
    ``mean``/``std``/``class_names`` go into the artifact's preprocessing metadata."""
    recipe = from_dict({"seed": seed, "model": {"arch": arch, "init": init, "width": width, "hidden": list(hidden),
                                                "batchnorm": batchnorm, "biases": biases, "norms": norms,
                                                "params": params},
                        "search": {"method": method, "density": density, "global_topk": global_topk,
                                   "dense_first": dense_first, "dense_last": dense_last},
                        "data": _own_data(in_chans, image_size, num_classes)})
    model = build_model(recipe.model, recipe.search, in_channels=in_chans, image_size=image_size,
                        num_classes=num_classes, seed=seed)
    model.popcli_description = {"recipe": recipe,
                                "data_info": _data_info(in_chans, image_size, num_classes, mean, std, class_names)}
    model.popcli_report = policy.report(model, biases, params)
    return model


def subnetify(module: nn.Module, density: float = 0.5, *, seed: int = 0, init: str = "signed_constant",
              biases: str = "drop", norms: str = "nonaffine", params: str = "train", keep_dense: KeepDense = None,
              allow_unhandled: bool = False, arch: str | None = None, input_shape: Sequence[int] | None = None,
              num_classes: int | None = None, mean=None, std=None, class_names=None) -> nn.Module:
    """Any module -> subnet layers at ``density`` with popcli's portable weights from ``seed``.

    Conv2d/Linear/packed MultiheadAttention are masked; biases, norms and other parameters follow
    the policies of ``popcli.models.policy`` (``biases`` drop|frozen|train, ``norms`` nonaffine|train,
    ``params`` train|frozen); ``keep_dense`` keeps chosen layers plain (trained, stored). A module
    with weights popcli cannot mask is a ModelError unless ``allow_unhandled`` (then its
    parameters follow ``params``). The module's own weights are replaced (an artifact regenerates
    them from the seed). ``model.popcli_report`` says what became of everything. With
    ``input_shape`` [C, H, W] and ``num_classes`` the model describes itself for ``popcli.save``;
    with ``arch`` too (the registry name or import path that builds this same structure) the
    artifact names its builder, without it the artifact records none and loads into the same
    module built again: ``popcli.load(path, model=module)``. Converts in place; returns the root.
    """
    policy.check(biases, norms, params)
    model = to_subnet_layers(module, density, keep_dense=keep_dense, nonaffine_norms=norms == "nonaffine",
                             keep_biases=biases != "drop")
    policy.check_unhandled(model, allow_unhandled)
    init_weights(model, seed, init, density)
    policy.init_params(model, seed, biases, params)
    policy.set_trainable(model, biases, params)
    model.popcli_report = policy.report(model, biases, params)
    if arch is not None and (input_shape is None or num_classes is None):
        raise ModelError("subnetify(arch=...) also needs input_shape=[C, H, W] and num_classes to describe the model")
    if input_shape is not None and num_classes is not None:  # no arch: the file records no builder (NO_BUILDER)
        if len(input_shape) != 3:
            raise ModelError(f"input_shape {list(input_shape)}: expected [C, H, W]")
        c, h, w = (int(d) for d in input_shape)
        if h != w:
            raise ModelError(f"input_shape {list(input_shape)}: popcli models take square images (H = W)")
        recipe = from_dict({"seed": seed, "model": {"arch": arch or NO_BUILDER, "init": init, "biases": biases,
                                                    "norms": norms, "params": params}, "search": {"density": density},
                            "data": _own_data(c, h, num_classes)})
        model.popcli_description = {"recipe": recipe,
                                    "data_info": _data_info(c, h, num_classes, mean, std, class_names)}
    return model.train()


def description(model: nn.Module, recipe: Recipe | None, data_info: dict | None) -> tuple[Recipe, dict]:
    """(recipe, data_info) for saving ``model``: the ones given, else the model's own; checked to
    describe the model (the architecture the recipe builds has the model's layers and tensors)."""
    own = getattr(model, "popcli_description", None)
    if recipe is None or data_info is None:
        if own is None:
            raise ModelError("this model does not describe itself: build it with popcli.create_model or "
                             "popcli.subnetify(..., input_shape=[C, H, W], num_classes=K), or pass recipe= and "
                             "data_info=")
        recipe, data_info = recipe or own["recipe"], data_info or own["data_info"]
    _check_describes(model, recipe, data_info)
    return recipe, data_info


def _check_describes(model: nn.Module, recipe: Recipe, data_info: dict) -> None:
    """ModelError unless the recipe's architecture (built on meta) has the model's masked layers and
    state tensors; a recipe naming no builder (``NO_BUILDER``) describes any model with subnet layers
    (its loader checks the module it is given against the file)."""
    if recipe.model.arch == NO_BUILDER:
        if not any(True for _ in masked_layers(model)) and recipe.search.method != "dense":
            raise ModelError("this model has no subnet layers (popcli.load's default mode='infer' bakes them); load it "
                             "with popcli.load(path, model=..., mode='search') to save it again")
        return
    try:
        shape, classes = [int(d) for d in data_info["shape"]], int(data_info["num_classes"])
        found = difference(model, recipe, shape, classes)
    except (KeyError, TypeError, ValueError):
        raise ModelError("data_info must be {'shape': [C, H, W], 'num_classes': K}") from None
    except PopcliError as err:
        raise ModelError(f"the recipe does not build a model ({err})") from None
    if found is None:
        return
    if found.kind == "no_subnets":
        raise ModelError("this model has no subnet layers (popcli.load's default mode='infer' bakes them); load it "
                         "with popcli.load(path, mode='search') to save it again")
    raise ModelError(f"the recipe ({recipe.model.arch!r}) does not describe this model: {found.detail}; save with the "
                     f"recipe the model was built from")
