"""popcli: find the sparse subnetworks hidden in randomly weighted networks, and ship them.

Library entry points (the CLI in ``popcli.cli`` is a thin layer over these):

    from popcli import recipe
    from popcli.search import search
    summary = search(recipe.load(None, ["search.epochs=1"]), "runs/demo")
"""

__version__ = "0.1.0"

from .errors import PopcliError  # noqa: E402

__all__ = ["PopcliError", "__version__"]
