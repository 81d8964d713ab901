"""The search engine: the loop that trains scores over frozen random weights, and what it needs.

``loop`` (``search``: epochs, evaluation, summary), ``job`` (what one search holds; building
it), ``commit`` (last.pt, the one commit point, and what is derived from it), ``api``
(``popcli.search`` on a recipe or on the user's own model and data), ``distributed``
(torchrun), ``memory`` (refusing what cannot fit), ``runtime`` (device, AMP, threads),
``optim`` (optimizers, learning-rate schedules), ``tb_log`` (TensorBoard). Imports ``storage``,
``recipe``, ``data``, ``models``, ``methods``, ``nn`` and ``measure``; never ``artifact`` or above.
"""
