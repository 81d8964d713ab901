"""Search methods: how a masked layer turns (weight, score) into its effective weight, which
optimizer its paper trains the scores with, and what an artifact must store for it.

Each method is one ``Method`` record here plus, when its layers differ from edge-popup's, a
layer rule in its own module (``biprop``, ``signed``, ``subspace``) that ``configure`` attaches to every subnet
layer (``layer.rule``). The search loop, the artifact writer and the ONNX export call the layer's
``effective_weight()`` and the hooks below and need no change when a method is added:

- ``optimizer``: the paper's optimizer settings, used for every ``search.<key>`` the recipe
  leaves unset (None); ``recipe.resolve`` writes them into the resolved recipe.
- ``topk``: the mask is a top-k of the scores at ``search.density`` (density schedules and global
  top-k apply); supermask samples its mask instead.
- ``ternary``: the mask has three symbols (drop, keep, keep with the sign flipped).

The package imports only ``errors``, ``nn`` (the layers), ``codecs``, ``rng`` (``iterand``:
IteRand's redraw rounds; ``subspace``'s projection) and ``storage`` (``store``), never the recipe or the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError

OPTIMIZER_KEYS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay")


@dataclass(frozen=True)
class Method:
    name: str
    paper: str
    optimizer: dict[str, Any]  # search.<key> -> the paper's value (every OPTIMIZER_KEYS entry)
    masked: bool = True  # False: dense training of the weights
    topk: bool = True  # the mask is a top-k at search.density
    ternary: bool = False  # the mask holds {-1, 0, +1}
    notes: str = field(default="", compare=False)


_SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("edge-popup", "Ramanujan et al. 2020, arXiv:1911.13299", dict(_SGD),
           notes="the reference configs: SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine"),
    Method("supermask", "Zhou et al. 2019, arXiv:1905.01067",
           {"optimizer": "adam", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}, topk=False,
           notes="Adam lr 0.1 without weight decay: the best of three settings measured in docs/RESULTS.md"),
    Method("biprop", "Diffenderfer & Kailkhura 2021, arXiv:2103.09377", dict(_SGD),
           notes="the reference configs (chrundle/biprop): SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine"),
    Method("signed-supermask", "Koster et al. 2022, arXiv:2201.13361",
           {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, ternary=True,
           notes="the FCN configs: SGD(W) lr 0.05, Nesterov momentum 0.9, weight decay 5e-4"),
    Method("subspace", "Li et al. 2018, arXiv:1804.08838 (Fastfood: Le et al. 2013; PRANC: Nooralinejad et al. 2023)",
           {"optimizer": "adam", "lr": 0.3, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}, topk=False,
           notes="Adam lr min(0.3, 300 / d) without weight decay on z (docs/RESULTS.md, 'Subspace method'); density 1.0 only"),
    Method("dense", "the trained baseline", dict(_SGD), masked=False, topk=False),
)}
NAMES = tuple(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ModelError(f"unknown search.method {name!r}; use one of: {', '.join(NAMES)}")
    return METHODS[name]


def optimizer_default(method: str, key: str, subspace_dim: int | None = None) -> Any:
    """The paper's value of ``search.<key>`` (an OPTIMIZER_KEYS entry) for ``method``; the subspace
    method's lr depends on d (``subspace_dim``): min(0.3, 300 / d), the optimum measured at d = 1000
    and d = 4000 (docs/RESULTS.md, "Subspace method"): Adam moves every coordinate of z by ~lr, so
    the step in w grows with d."""
    value = get_method(method).optimizer[key]
    if method == "subspace" and key == "lr" and subspace_dim is not None:
        return min(value, 300.0 / subspace_dim)
    return value


def make_rule(method: str):
    """A fresh layer rule for one subnet layer of ``method`` (None: edge-popup's own path)."""
    if method == "biprop":
        from .biprop import BipropRule

        return BipropRule()
    if method == "signed-supermask":
        from .signed import SignedRule

        return SignedRule()
    if method == "subspace":
        from .subspace import SubspaceRule

        return SubspaceRule()
    return None


def configure(layers, method: str) -> None:
    """Give every subnet layer of a ``method`` model its behaviour: supermask sampling or a rule."""
    for layer in layers:
        layer.sampled = method == "supermask"
        layer.rule = make_rule(method)


__all__ = ["METHODS", "Method", "NAMES", "OPTIMIZER_KEYS", "configure", "get_method", "make_rule",
           "optimizer_default"]
