"""Deployment: a found subnetwork as a plain model, a verified ONNX file, an int8 copy, and
``popcli eval``'s measurements of each.

``bake`` (masks applied, batch norm folded, dead units removed; parameter and FLOP counts),
``graph`` (the ONNX graph of a baked model, ONNX Runtime sessions, parity with PyTorch),
``int8`` (static QDQ quantization and its report), ``onnx_file`` (``export_onnx``: bake, export,
verify, write), ``evaluate`` (``popcli eval``: accuracy and latency per runtime), ``task_eval``
(``popcli eval --mask auto``: SupSup's task inference per batch size). Imports
``artifact``, ``measure``, ``data``, ``models``, ``nn``, ``recipe`` and ``storage``.
"""
