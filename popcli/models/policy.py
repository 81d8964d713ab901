"""What becomes of every parameter of a converted model: the policy per kind, and the conversion report.

Every parameter is one of (docs/ALGORITHM.md, "Biases and other parameters"):

    masked   a subnet layer's weight: frozen, regenerated from the seed (rng.generate_weight)
    score    a subnet layer's score: trained, not stored (the mask is)
    bias     a subnet layer's (or subnet attention's) bias, by ``biases``:
             "drop" (removed by the converter), "frozen" (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from
             its own stream, rng.generate_tensor; not stored, regenerated), "train" (same initial
             draw, trained, stored as ``state.<name>``)
    dense    a plain Conv2d/Linear kept dense (weight and bias): trained, stored
    norm     a norm's gamma/beta when ``norms="train"`` (1 and 0 at first): trained, stored
             (``norms="nonaffine"`` removes them)
    param    anything else (ViT's class token and position embedding, ConvNeXt's layer scale, and
             modules popcli cannot mask when allowed), by ``params``: "train" (N(0, 0.02) from its
             own stream at first, trained, stored) or "frozen" (that draw, not stored, regenerated)

Buffers (batch-norm statistics, ...) are stored. ``classify`` names the kind of each parameter;
``init_params`` draws the non-weight ones; ``ConversionReport`` lists what a conversion did. A
module with weights popcli cannot mask (Conv1d/3d, transposed convs, Embedding, RNNs, an
unconvertible MultiheadAttention, ...) is an error unless allowed. Nothing here prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .. import rng
from ..errors import ModelError
from ..nn import SubnetMixin
from ..nn.attention import SubnetMultiheadAttention

BIASES = ("drop", "frozen", "train")
NORMS = ("nonaffine", "train")
PARAMS = ("train", "frozen")
PARAM_STD = 0.02  # initial draw of "other" parameters (ViT's position embedding init)
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
_UNMASKABLE = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Embedding,
               nn.EmbeddingBag, nn.RNNBase, nn.Bilinear, nn.MultiheadAttention, nn.PReLU)


@dataclass(repr=False)
class ConversionReport:
    """What a conversion made of a model (qualified names, ``named_modules``/``named_parameters`` order).

    ``print(model.popcli_report)`` gives a short summary with counts; ``repr`` one line of them."""

    masked: list[str] = field(default_factory=list)  # subnet layers (weights masked)
    dense: list[str] = field(default_factory=list)  # plain Conv2d/Linear kept dense (trained, stored)
    stored: list[str] = field(default_factory=list)  # trained parameters and buffers stored as state.<name>
    frozen: list[str] = field(default_factory=list)  # parameters regenerated from the seed, not stored
    unhandled: list[str] = field(default_factory=list)  # modules with weights popcli cannot mask
    masked_weights: int = 0  # weights of the subnet layers (each has a score; the artifact stores its mask bit)
    stored_values: int = 0  # numbers in the stored tensors (what the artifact holds besides the masks)
    frozen_values: int = 0  # numbers in the frozen parameters (regenerated, not stored)

    def to_dict(self) -> dict[str, list[str]]:
        return {"masked": self.masked, "dense": self.dense, "stored": self.stored, "frozen": self.frozen,
                "unhandled": self.unhandled}

    def __repr__(self) -> str:
        return (f"ConversionReport(masked={len(self.masked)} layers / {self.masked_weights:,} weights, "
                f"dense={len(self.dense)}, stored={len(self.stored)} tensors / {self.stored_values:,} values, "
                f"frozen={len(self.frozen)} / {self.frozen_values:,} values, unhandled={len(self.unhandled)})")

    def __str__(self) -> str:
        rows = [("masked layers", len(self.masked), f"{self.masked_weights:,} weights: seed + 1 mask bit each",
                 self.masked),
                ("dense layers", len(self.dense), "trained, stored", self.dense),
                ("stored tensors", len(self.stored), f"{self.stored_values:,} values", self.stored),
                ("frozen parameters", len(self.frozen), f"{self.frozen_values:,} values, regenerated from the seed",
                 self.frozen),
                ("unhandled modules", len(self.unhandled), "kept as they are (allow_unhandled)", self.unhandled)]
        lines = ["popcli conversion report"]
        for label, count, what, names in rows:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            lines.append(f"  {label:<18} {count:>5}  {what}" + (f"  [{shown}]" if names else ""))
        return "\n".join(lines)


def check(biases: str, norms: str, params: str) -> None:
    for value, valid, key in ((biases, BIASES, "biases"), (norms, NORMS, "norms"), (params, PARAMS, "params")):
        if value not in valid:
            raise ModelError(f"{key}={value!r}: choose one of {', '.join(valid)}")


def _unhandled(module: nn.Module) -> bool:
    return isinstance(module, _UNMASKABLE) and not isinstance(module, SubnetMultiheadAttention)


def classify(model: nn.Module, biases: str, params: str) -> dict[str, str]:
    """{parameter name: kind} with kind one of masked, score, bias:frozen, bias:train, dense, norm,
    param:frozen, param:train (see the module docstring). A fixed-mask layer's empty score is skipped."""
    kinds: dict[str, str] = {}
    for owner_name, owner in model.named_modules():
        for key, tensor in owner.named_parameters(recurse=False):
            name = f"{owner_name}.{key}" if owner_name else key
            if isinstance(owner, SubnetMixin):
                kind = {"weight": "masked", "scores": "score"}.get(key, f"bias:{biases}")
                if kind == "score" and tensor.numel() == 0:
                    continue
            elif isinstance(owner, (nn.Conv2d, nn.Linear)):
                kind = "dense"
            elif isinstance(owner, _NORM_TYPES):
                kind = "norm"
            else:
                kind = f"param:{params}"
            kinds.setdefault(name, kind)
    return kinds


def unhandled_modules(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if _unhandled(module)]


def frozen_names(model: nn.Module, biases: str, params: str) -> list[str]:
    return [name for name, kind in classify(model, biases, params).items() if kind.endswith(":frozen")]


def _initial(name: str, tensor: torch.Tensor, owner: nn.Module, kind: str, seed: int) -> torch.Tensor | None:
    """The portable initial value of a non-weight parameter (None: leave it)."""
    if kind.startswith("bias:") or (kind == "dense" and name.endswith(".bias")):
        fan_in = owner.weight[0].numel()
        return rng.generate_tensor(seed, name, tensor.shape, "uniform", 1.0 / math.sqrt(fan_in))
    if kind.startswith("param:"):
        return rng.generate_tensor(seed, name, tensor.shape, "normal", PARAM_STD)
    return None


def init_params(model: nn.Module, seed: int, biases: str, params: str, only_frozen: bool = False) -> None:
    """Biases and "other" parameters := their portable draws; frozen ones stop requiring grad.
    ``only_frozen``: draw only the frozen ones (what a loader regenerates); works on meta-built
    models too (a frozen tensor on meta becomes a real CPU one)."""
    kinds = classify(model, biases, params)
    for name, kind in kinds.items():
        owner_name, _, key = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if only_frozen and not kind.endswith(":frozen"):
            continue
        value = _initial(name, getattr(owner, key), owner, kind, seed)
        if value is None:
            continue
        setattr(owner, key, nn.Parameter(value, requires_grad=not kind.endswith(":frozen")))


def report(model: nn.Module, biases: str, params: str) -> ConversionReport:
    """The conversion report of a converted model (see ConversionReport)."""
    kinds = classify(model, biases, params)
    out = ConversionReport(unhandled=unhandled_modules(model))
    out.masked = [name for name, m in model.named_modules() if isinstance(m, SubnetMixin)]
    out.dense = [name for name, m in model.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, SubnetMixin)]
    out.frozen = [name for name, kind in kinds.items() if kind.endswith(":frozen")]
    skip = {name for name, kind in kinds.items() if kind in ("masked", "score") or kind.endswith(":frozen")}
    state = model.state_dict()
    out.stored = [name for name in state if name not in skip and not name.endswith(".scores")]
    params = dict(model.named_parameters())
    out.masked_weights = sum(model.get_submodule(name).weight.numel() for name in out.masked)
    out.stored_values = sum(state[name].numel() for name in out.stored)
    out.frozen_values = sum(params[name].numel() for name in out.frozen if name in params)
    return out


def check_unhandled(model: nn.Module, allow_unhandled: bool) -> None:
    names = unhandled_modules(model)
    if names and not allow_unhandled:
        module = model.get_submodule(names[0])
        raise ModelError(f"{len(names)} module(s) with weights popcli cannot mask, first {names[0]!r} "
                         f"({type(module).__name__}); pass allow_unhandled=True to keep them dense (their "
                         f"parameters follow the params policy), or replace them")


def set_trainable(model: nn.Module, biases: str, params: str) -> None:
    """requires_grad by kind: scores and trained kinds yes; masked weights and frozen kinds no."""
    for name, kind in classify(model, biases, params).items():
        owner_name, _, key = name.rpartition(".")
        tensor = getattr(model.get_submodule(owner_name), key)
        tensor.requires_grad_(kind not in ("masked",) and not kind.endswith(":frozen"))
