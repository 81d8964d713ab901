"""Export: a search run -> its artifact (``run``), several runs' masks -> one multi-mask artifact
(``bundle``), and ``popcli export`` over both plus the ONNX graph (``api.export``).

Imports ``artifact`` (the file), ``deploy`` (ONNX), ``models``, ``recipe``, ``storage`` and
``data.facts``; the search itself (``engine``) is never imported: a run folder is the interface.
"""

from .api import export
from .run import find_checkpoint, model_from_checkpoint

__all__ = ["export", "find_checkpoint", "model_from_checkpoint"]
