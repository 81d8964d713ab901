"""A one-release shim (0.2.0, removed in 0.3.0): submitit jobs queued by popcli 0.1 pickled the
function ``popcli.sweep_pool.run_point``, which now lives in ``popcli.sweep.pool``."""

from .sweep.pool import run_point

__all__ = ["run_point"]
