"""The library entry points users of timm expect: ``create_model`` and ``subnetify``; models that describe themselves.

``create_model(arch, density=..., num_classes=..., input_shape=(C, H, W))`` builds a
registered model (``popcli models``) ready to search, and ``subnetify(module, density, ...)``
converts any torch module (its weights replaced by popcli's portable draws from ``seed``). Both
attach ``model.popcli_description`` (the recipe and data description an artifact needs, so
``popcli.save(model, path)`` takes no recipe), ``model.popcli_data_config`` (the preprocessing
dictionary a loaded model has too: ``data.preprocessing``) and ``model.popcli_report``
(``policy.ConversionReport``; ``print`` it for counts). The input shape is spelled
``input_shape=(C, H, W)`` in both (timm's ``in_chans``/``image_size`` are aliases).
A subnetified module describes itself only when ``arch=`` names the builder that rebuilds it;
it always records its conversion (``popcli_conversion``: seed, init and the policies), which
``popcli.search(model, ..., arch=...)`` keeps.
``description(model, recipe, data_info)`` is what ``popcli.save`` uses (checked by
``describe.difference``). ``popcli/__init__.py`` re-exports both as ``popcli.create_model`` and
``popcli.subnetify``. Nothing here prints.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn

from ..data.preprocessing import check_preprocessing, data_config
from ..errors import ModelError, PopcliError
from ..nn import KeepDense, SubnetMixin, SubnetMultiheadAttention, to_subnet_layers
from ..recipe import Recipe, from_dict
from . import policy
from .build import build_model, init_weights, input_size
from .describe import difference
from .hooks import masked_layers
from .trust import NO_BUILDER

DEFAULT_INPUT = (3, 32, 32)  # create_model's input when none is given (CIFAR-sized)


def input_shape_of(input_shape: Sequence[int] | None, in_chans: int | None, image_size: int | None,
                   default: Sequence[int] | None) -> list[int] | None:
    """[C, H, W] from ``input_shape`` (the one spelling) or timm's aliases ``in_chans`` + ``image_size``
    (an int: square); ModelError when both are given and disagree."""
    if input_shape is not None:
        if isinstance(input_shape, (str, bytes, int)) or len(input_shape) != 3:
            raise ModelError(f"input_shape={input_shape!r}: expected (C, H, W), e.g. input_shape=(3, 32, 32)")
        shape = [int(d) for d in input_shape]
        if (in_chans is not None and in_chans != shape[0]) or (image_size is not None and [image_size] * 2 != shape[1:]):
            raise ModelError(f"input_shape={tuple(shape)} disagrees with in_chans={in_chans}, image_size={image_size}; "
                             f"pass input_shape=(C, H, W) alone (in_chans/image_size are its aliases)")
        return shape
    if in_chans is None and image_size is None:
        return None if default is None else list(default)
    channels = default[0] if in_chans is None and default is not None else in_chans
    side = default[1] if image_size is None and default is not None else image_size
    if channels is None or side is None:
        raise ModelError("give the input as input_shape=(C, H, W) (in_chans and image_size alone are not enough)")
    return [int(channels), int(side), int(side)]


def _data_info(shape: list[int], num_classes: int, mean, std, class_names) -> dict[str, Any]:
    check_preprocessing(shape, num_classes, mean, std, class_names)
    info: dict[str, Any] = {"shape": list(shape), "num_classes": int(num_classes),
                            "dataset": None}  # not trained on a popcli dataset: preprocessing is what is given here
    for key, value in (("mean", mean), ("std", std)):
        if value is not None:
            info[key] = [float(v) for v in value]
    if class_names is not None:
        info["class_names"] = [str(c) for c in class_names]
    return info


def _own_data(shape: list[int], num_classes: int) -> dict[str, Any]:
    """The recipe's data section of a model built outside a search: synthetic data of its shape
    (what ``popcli export --onnx`` checks parity on when no real data is named)."""
    return {"dataset": "synthetic", "shape": list(shape), "num_classes": int(num_classes)}


def _describe(model: nn.Module, recipe: Recipe, info: dict[str, Any]) -> None:
    """Attach what ``popcli.save`` and ``popcli.search`` read: the recipe and data description, and
    the preprocessing dictionary (``model.popcli_data_config``, as a loaded model has)."""
    model.popcli_description = {"recipe": recipe, "data_info": info}
    model.popcli_data_config = data_config(None, info["shape"], info["num_classes"], info.get("mean"),
                                           info.get("std"), info.get("class_names"))


def create_model(arch: str, *, density: float = 0.5, num_classes: int = 10, input_shape: Sequence[int] | None = None,
                 in_chans: int | None = None, image_size: int | None = None, pretrained: bool = False,
                 init: str = "signed_constant", seed: int = 0, method: str = "edge-popup", width: float = 1.0,
                 hidden: Sequence[int] = (300, 100), batchnorm: bool = False, biases: str = "drop",
                 norms: str = "nonaffine", params: str = "train", global_topk: bool = False, dense_first: bool = False,
                 dense_last: bool = False, subspace_dim: int = 1000, subspace_dtype: str = "float32",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 class_names: Sequence[str] | None = None) -> nn.Module:
    """A registered architecture with portable random weights and scores, in train mode, that
    ``popcli.save`` can write without a recipe. The input is ``input_shape=(C, H, W)`` (default
    (3, 32, 32); timm's ``in_chans``/``image_size`` are accepted as aliases); other arguments as
    the recipe's model/search keys; ``mean``/``std``/``class_names`` go into the artifact's
    preprocessing metadata. ``pretrained=True`` is refused: edge-popup searches inside random
    weights that a seed regenerates, which trained weights are not."""
    if not isinstance(arch, str):
        raise ModelError(f"create_model takes a model name (popcli.list_models()), got {type(arch).__name__}; "
                         f"to convert a module you built, use popcli.subnetify(module, density=...)")
    if pretrained:
        raise ModelError("pretrained=True: popcli searches a mask inside random weights regenerated from a seed (the "
                         "artifact stores seed + mask); trained weights cannot be regenerated, so create_model builds "
                         "random ones only (pretrained=False)")
    shape = input_shape_of(input_shape, in_chans, image_size, DEFAULT_INPUT)
    info = _data_info(shape, num_classes, mean, std, class_names)
    recipe = from_dict({"seed": seed, "model": {"arch": arch, "init": init, "width": width, "hidden": list(hidden),
                                                "batchnorm": batchnorm, "biases": biases, "norms": norms,
                                                "params": params},
                        "search": {"method": method, "density": density, "global_topk": global_topk,
                                   "dense_first": dense_first, "dense_last": dense_last,
                                   "subspace_dim": subspace_dim, "subspace_dtype": subspace_dtype},
                        "data": _own_data(shape, num_classes)})
    model = build_model(recipe.model, recipe.search, in_channels=shape[0], image_size=input_size(shape),
                        num_classes=num_classes, seed=seed)
    _describe(model, recipe, info)
    model.popcli_report = policy.report(model, biases, params)
    return model


def _check_convertible(module: Any) -> None:
    """A torch module not converted before (subnetify refuses to convert twice)."""
    if not isinstance(module, nn.Module):
        hint = (f"; for a registered architecture use popcli.create_model({module!r}, ...)" if isinstance(module, str)
                else "")
        raise ModelError(f"subnetify converts a torch.nn.Module, got {type(module).__name__}{hint}")
    done = [name for name, m in module.named_modules() if isinstance(m, (SubnetMixin, SubnetMultiheadAttention))]
    if done:
        raise ModelError(f"this module is already subnetified ({len(done)} subnet layer(s), first "
                         f"{done[0] or '<root>'!r}); convert a fresh module (another density: build it again and "
                         f"subnetify it with that density)")


def subnetify(module: nn.Module, density: float = 0.5, *, seed: int = 0, init: str = "signed_constant",
              biases: str = "drop", norms: str = "nonaffine", params: str = "train", keep_dense: KeepDense = None,
              allow_unhandled: bool = False, arch: str | None = None, input_shape: Sequence[int] | None = None,
              in_chans: int | None = None, image_size: int | None = None, num_classes: int | None = None,
              mean=None, std=None, class_names=None) -> nn.Module:
    """Any module -> subnet layers at ``density`` with popcli's portable weights from ``seed``.

    Conv2d/Linear/packed MultiheadAttention are masked; biases, norms and other parameters follow
    the policies of ``popcli.models.policy`` (``biases`` drop|frozen|train, ``norms`` nonaffine|train,
    ``params`` train|frozen); ``keep_dense`` keeps chosen layers plain (trained, stored): a
    callable (name, module) -> bool or qualified names of Conv2d/Linear/MultiheadAttention layers
    (an unknown name is a ModelError, as PEFT refuses unknown target modules). A module with
    weights popcli cannot mask is a ModelError unless ``allow_unhandled`` (then its parameters
    follow ``params``); an already subnetified module is refused. The module's own weights are
    replaced (an artifact regenerates them from the seed). ``model.popcli_report`` says what
    became of everything; ``model.popcli_data_config`` holds ``input_shape=(C, H, W)`` (aliases
    ``in_chans``/``image_size``), ``num_classes``, ``mean``, ``std`` and ``class_names`` when
    given, which ``popcli.search`` and the artifact keep. With ``input_shape`` and
    ``num_classes`` the model describes itself for ``popcli.save``; with ``arch`` too (the
    registry name or import path that builds this same structure) the artifact names its
    builder, without it the artifact records none and loads into the same module built again:
    ``popcli.load(path, model=module)``. Converts in place; returns the root.
    """
    _check_convertible(module)
    policy.check(biases, norms, params)
    shape = input_shape_of(input_shape, in_chans, image_size, None)
    check_preprocessing(shape, num_classes, mean, std, class_names)
    model = to_subnet_layers(module, density, keep_dense=keep_dense, nonaffine_norms=norms == "nonaffine",
                             keep_biases=biases != "drop")
    policy.check_unhandled(model, allow_unhandled)
    init_weights(model, seed, init, density)
    policy.init_params(model, seed, biases, params)
    policy.set_trainable(model, biases, params)
    model.popcli_report = policy.report(model, biases, params)
    # what popcli.search needs to describe the model when it is given arch= later
    model.popcli_conversion = {"seed": seed, "model.init": init, "model.biases": biases, "model.norms": norms,
                               "model.params": params}
    model.popcli_data_config = data_config(None, shape, num_classes, mean, std, class_names)
    if arch is not None and (shape is None or num_classes is None):
        raise ModelError("subnetify(arch=...) also needs input_shape=(C, H, W) and num_classes to describe the model")
    if shape is not None and num_classes is not None:  # no arch: the file records no builder (NO_BUILDER)
        recipe = from_dict({"seed": seed, "model": {"arch": arch or NO_BUILDER, "init": init, "biases": biases,
                                                    "norms": norms, "params": params}, "search": {"density": density},
                            "data": _own_data(shape, num_classes)})
        _describe(model, recipe, _data_info(shape, num_classes, mean, std, class_names))
    return model.train()


def description(model: nn.Module, recipe: Recipe | None, data_info: dict | None) -> tuple[Recipe, dict]:
    """(recipe, data_info) for saving ``model``: the ones given, else the model's own; checked to
    describe the model (the architecture the recipe builds has the model's layers and tensors)."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"popcli.save writes a torch.nn.Module built by popcli, got {type(model).__name__}")
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
