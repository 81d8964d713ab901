"""What benchmarks/frontier.py measures: the base networks, their epochs, the methods, the
densities, and the tiny setting of the test suite (docs/RESULTS.md states the recipes)."""

from __future__ import annotations

from dataclasses import dataclass

import baselines as bl

DEFAULT_INIT = "scaled_signed_constant"  # the best init of docs/RESULTS.md's LeNet sweep
# per-method recipe keys of the popcli points beyond the method's own optimizer defaults
# (popcli.methods): signed supermasks take their paper's ELUS init instead of --init
METHOD_SETS = {"signed-supermask": ["model.init=elus_signed_constant"]}


@dataclass(frozen=True)
class Base:
    """A base network: popcli's recipe and the plain MLP of the same shape for the baselines."""

    name: str
    recipe: str  # path relative to the repository
    spec: bl.MLPSpec
    search_epochs: int  # popcli points (reduced from the recipe's for the CPU budget)
    dense_epochs: float  # dense baseline and small networks
    finetune_epochs: float  # after each magnitude-pruning step
    dense_lrs: tuple[float, ...] = (0.03, 0.1, 0.3)  # the tuning sweep of the dense baseline
    small_up_to: float = 1.0  # small dense networks for the densities up to this one
    densities: tuple[float, ...] | None = None  # None: Settings.densities
    shape: tuple[int, int, int] = (1, 28, 28)


@dataclass(frozen=True)
class Settings:
    bases: tuple[Base, ...]
    methods: tuple[str, ...] = ("edge-popup", "biprop", "signed-supermask", "supermask")
    densities: tuple[float, ...] = (0.5, 0.3, 0.1, 0.05, 0.03, 0.01)  # pruned in this order
    init: str = DEFAULT_INIT  # popcli points (signed-supermask: METHOD_SETS)
    small_epochs: float = 2.0  # the small dense networks (as many as popcli's LeNet points)
    finetune_lr_factor: float = 0.1  # fine-tuning lr = tuned dense lr x this (Deep Compression)
    threads: int = 1  # 2 threads on 2 busy cores ran 2.6x slower than 1
    data: tuple[str, ...] = ()  # recipe overrides for the data section (tiny: synthetic)
    extra: tuple[str, ...] = ()  # recipe overrides for every popcli point
    series_sets: tuple[str, ...] = ()  # --set overrides: part of the series name (a new series)
    max_steps: int | None = None  # every training run capped (tiny)
    latency_s: float = 0.5  # seconds of timed calls per latency figure
    distill: str | None = None  # --distill RUN: every point (popcli and baselines) distilled from this teacher
    distill_temperature: float = 4.0  # search.distill_temperature (and the baselines' distiller)
    distill_weight: float = 0.5  # search.distill_weight

    def series(self, method: str) -> str:
        """The series name of ``method`` under distillation: "edge-popup, distill T2 w0.3"."""
        if self.distill is None:
            return method
        return f"{method}, distill T{self.distill_temperature:g} w{self.distill_weight:g}"

    def distill_sets(self) -> list[str]:
        """The recipe keys of a distilled popcli point (none without --distill)."""
        if self.distill is None:
            return []
        return [f"search.distill_teacher={self.distill}", f"search.distill_temperature={self.distill_temperature:g}",
                f"search.distill_weight={self.distill_weight:g}"]


# Epochs are cut from the recipes' (LeNet 5, quick start 10) to fit ~1 hour on 2 CPU cores shared
# with other jobs (docs/RESULTS.md); every method of a base gets the same number of epochs.
FULL_BASES = (
    Base("lenet", "recipes/fashion-mnist-paper-sweep.yaml", bl.MLPSpec(hidden=[300, 100]), 2, 2, 1),
    Base("quickstart", "recipes/quickstart.yaml", bl.MLPSpec(hidden=[1024, 1024], batchnorm=True), 1, 1, 0.5,
         dense_lrs=(0.1,), small_up_to=0.0),
)


def tiny_settings() -> Settings:
    """Every kind of point on a small synthetic task: seconds, for the test suite."""
    spec = bl.MLPSpec(hidden=[32, 16])
    base = Base("lenet", "recipes/fashion-mnist-paper-sweep.yaml", spec, 1, 1, 1, dense_lrs=(0.1,))
    data = ("data.dataset=synthetic", "data.shape=[1,28,28]", "data.train_size=256", "data.test_size=128",
            "data.batch_size=64")
    return Settings(bases=(base,), methods=("edge-popup",), densities=(0.5, 0.1), small_epochs=1, threads=1,
                    data=data, extra=("model.hidden=[32,16]",), max_steps=4, latency_s=0.01)
