"""Sweeps: grids of searches, how their points run, their results and figures, and the runs index.

``grid`` (``run_sweep``: the cross product of recipe keys, one resumable run folder per point,
results.csv), ``pool`` (a point's search in this process, N worker processes, or submitit),
``groups`` (which keys vary; mean and std over seeds), ``plot`` (the figures), ``runs_index``
(``popcli runs``: one row per finished search under a folder). Imports ``engine`` (a point is
one search), ``recipe``, ``storage`` and ``errors``.
"""
