"""Files: atomic writes, run folders and checkpoints, the run-folder lock, strict JSON, fault points.

The lowest layer above ``errors``: it knows files and bytes, not models. ``atomic`` writes any
file so that a kill or a full disk never leaves a partial one; ``checkpoint`` is what a run
folder holds and how checkpoints load (``weights_only``); ``runlock`` keeps two searches out of
one folder; ``strict_json`` reads and writes RFC 8259 JSON; ``sniff`` names foreign files;
``faults`` lets tests crash a write at a named point. Imports only ``popcli.errors``.
"""
