"""Density schedules (``search.density_schedule``): the fraction kept as a function of the step.

- ``constant``: ``search.density`` from the first step (edge-popup).
- ``anneal``: from 1.0 (everything kept) down to ``search.density`` over the first
  ``search.density_anneal_epochs`` epochs, then constant:

      d(step) = d + (1 - d) * (1 - min(1, step / (E * steps_per_epoch)))^3

  the cubic decay biprop's progressive pruning uses against layer collapse at high sparsity
  (chrundle/biprop main.py, itself after Zhu & Gupta 2017), evaluated every step instead of once
  per epoch, and starting at 1.0 instead of biprop's 0.5.

The schedule is a pure function of the global step, so a resumed run sets exactly the densities
an uninterrupted one would. It applies to every top-k method (per layer, or to global top-k).
A run stopped during the anneal (``search.max_steps``) evaluates, checkpoints (``density`` in
last.pt) and exports the masks at the density it reached, not the schedule's final one.
"""

from __future__ import annotations


def density_at(target: float, schedule: str, anneal_epochs: float, step: int, steps_per_epoch: int) -> float:
    """The density of training step ``step`` (0-based)."""
    if schedule == "constant" or anneal_epochs <= 0:
        return target
    progress = min(1.0, step / max(1.0, anneal_epochs * steps_per_epoch))
    return target + (1.0 - target) * (1.0 - progress) ** 3


def set_density(model, density: float) -> None:
    """Every searching subnet layer's (and the global top-k hook's) density := ``density``; a
    layer with a fixed mask keeps its own."""
    from ..nn import SubnetMixin

    for module in model.modules():
        if isinstance(module, SubnetMixin) and module.fixed_mask is None:
            module.density = density
    hook = getattr(model, "_popcli_global_topk", None)
    if hook is not None:
        hook.density = density


class DensitySchedule:
    """Sets the density of a training step (``set_density``) before it runs; called by
    ``models.set_step``. ``current`` is the density of the last step set (None before the
    first): what the masks keep, and so what a checkpoint, its evaluation and its export hold."""

    def __init__(self, target: float, schedule: str, anneal_epochs: float, steps_per_epoch: int):
        self.target, self.schedule, self.anneal_epochs = target, schedule, anneal_epochs
        self.steps_per_epoch = steps_per_epoch
        self.current: float | None = None

    def __call__(self, model, step: int) -> float:
        density = density_at(self.target, self.schedule, self.anneal_epochs, step, self.steps_per_epoch)
        set_density(model, density)
        self.current = density
        return density

    def restore(self, model, density: float | None) -> None:
        """A checkpoint's ``current`` density back on ``model`` (a resume, an export)."""
        if density is not None:
            set_density(model, density)
            self.current = density


def enable(model, search_cfg, steps_per_epoch: int) -> DensitySchedule | None:
    """Attach the recipe's schedule to ``model`` (None for the constant schedule: nothing to do)."""
    if search_cfg.density_schedule == "constant":
        return None
    schedule = DensitySchedule(search_cfg.density, search_cfg.density_schedule, search_cfg.density_anneal_epochs,
                               steps_per_epoch)
    model._popcli_density_schedule = schedule  # a plain attribute: not in state_dict
    return schedule
