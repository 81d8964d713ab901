"""IteRand: iterative randomization of the pruned weights during an edge-popup search (Chijiwa
et al., "Pruning Randomly Initialized Neural Networks with Iterative Randomization", NeurIPS
2021, arXiv:2106.09269; docs/ALGORITHM.md).

After every ``K = search.iterand_every_steps``-th training step (global steps K, 2K, ...), round
``t`` (1, 2, ...) re-draws, in every masked layer, each currently pruned weight (mask 0) that the
round's Bernoulli(``r = search.iterand_rate``) choice picks (``rng.redraw_candidates``): its draw
counter ``d`` goes up by one and it takes element i of draw ``d`` (``rng.redrawn_weight``). Kept
weights never change, so the mask's effective weight changes only where the scores later pick
a re-drawn weight. Everything is a function of (seed, layer, round, draw number), so a resumed run
re-draws exactly what an uninterrupted one does, on any machine and any rank.

State: per masked layer the int16 buffer ``weight_draws`` (the weight's shape, non-persistent:
not in ``state_dict``, so artifacts and models without IteRand are unchanged) and the round
count on the ``IteRand`` object at ``model._popcli_iterand``; ``state``/``restore`` carry both
through a checkpoint (``engine.commit``). An artifact stores the draw number of each KEPT weight
(``artifact.redraws``). Nothing here prints.
"""

from __future__ import annotations

import torch

from .. import rng
from ..errors import PopcliError
from ..nn import SubnetMixin

DRAWS = "weight_draws"  # the per-layer buffer name
ATTRIBUTE = "_popcli_iterand"


def subnet_layers(model) -> list[tuple[str, SubnetMixin]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SubnetMixin)]


def draws_of(layer) -> torch.Tensor | None:
    """The layer's draw counters (int16, the weight's shape), or None (draw 0 everywhere)."""
    return getattr(layer, DRAWS, None)


class IteRand:
    """The redraw rounds of one search: ``after_step(model, step)`` runs a round when one is due."""

    def __init__(self, every_steps: int, rate: float, seed: int, init: str, density: float):
        self.every_steps, self.rate = int(every_steps), float(rate)
        self.seed, self.init, self.density = seed, init, density  # the weights' generator arguments
        self.rounds = 0  # rounds done so far

    def after_step(self, model, step: int) -> bool:
        """After global step ``step`` (1-based count of steps done): a round when ``step`` is a
        multiple of K. True when one ran."""
        if step % self.every_steps:
            return False
        self.rounds = step // self.every_steps
        with torch.no_grad():
            for name, layer in subnet_layers(model):
                self._redraw(name, layer, self.rounds)
        return True

    def _redraw(self, name: str, layer, round_: int) -> None:
        counters = draws_of(layer)
        pruned = ~layer.mask().detach()
        n = layer.weight.numel()
        candidates = torch.from_numpy(rng.redraw_candidates(self.seed, name, round_, n, self.rate))
        chosen = (pruned.reshape(-1).cpu() & candidates).view(layer.weight.shape)
        if not chosen.any():
            return
        if int(counters.max()) >= rng.MAX_DRAW:
            raise PopcliError(f"layer {name!r}: a weight was re-drawn {rng.MAX_DRAW} times; raise "
                              f"search.iterand_every_steps")
        device = layer.weight.device
        new = counters.cpu() + chosen.to(torch.int16)
        for j in torch.unique(new[chosen]).tolist():
            at = chosen & (new == j)
            fresh = rng.generate_weight(self.seed, rng.redraw_name(name, int(j)), layer.weight.shape, self.init,
                                        self.density)
            layer.weight[at.to(device)] = fresh[at].to(device, layer.weight.dtype)  # in place: bumps the
            # weight's version, so a cached effective weight (nn.layers) is recomputed
        counters.copy_(new.to(device))


def enable(model, search_cfg, seed: int, init: str, density: float) -> IteRand | None:
    """Attach the recipe's IteRand (None when ``search.iterand_every_steps`` is 0): zero draw
    counters on every masked layer, the rounds on ``model._popcli_iterand``."""
    if not search_cfg.iterand_every_steps:
        return None
    for _, layer in subnet_layers(model):
        layer.register_buffer(DRAWS, torch.zeros(layer.weight.shape, dtype=torch.int16,
                                                 device=layer.weight.device), persistent=False)
    controller = IteRand(search_cfg.iterand_every_steps, search_cfg.iterand_rate, seed, init, density)
    setattr(model, ATTRIBUTE, controller)  # a plain attribute: not in state_dict
    return controller


def state(model) -> dict | None:
    """{"rounds": int, "draws": {layer name: int16 CPU tensor}} of a model with IteRand, else None."""
    controller = getattr(model, ATTRIBUTE, None)
    if controller is None:
        return None
    return {"rounds": controller.rounds,
            "draws": {name: draws_of(layer).detach().cpu().clone() for name, layer in subnet_layers(model)}}


def restore(model, saved: dict | None) -> None:
    """A checkpoint's ``state`` back on a model built with IteRand (its weights come with the
    model's state_dict; the counters say which draw each holds)."""
    controller = getattr(model, ATTRIBUTE, None)
    if controller is None:
        return
    if not isinstance(saved, dict) or not isinstance(saved.get("draws"), dict):
        raise PopcliError("the checkpoint holds no IteRand draw counters (written without "
                          "search.iterand_every_steps?); start over with --force")
    controller.rounds = int(saved.get("rounds", 0))
    for name, layer in subnet_layers(model):
        found = saved["draws"].get(name)
        if not isinstance(found, torch.Tensor) or found.shape != layer.weight.shape or found.dtype != torch.int16:
            raise PopcliError(f"the checkpoint's IteRand draw counters do not fit layer {name!r}; start over with --force")
        draws_of(layer).copy_(found.to(layer.weight.device))
