"""popcli: find the sparse subnetworks hidden in randomly weighted networks, and ship them.

Library entry points (the CLI in ``popcli.cli`` is a thin layer over these):

    from popcli import recipe
    from popcli.search import search
    summary = search(recipe.load(None, ["search.epochs=1"]), "runs/demo")
    from popcli.export import export
    export("runs/demo", "demo.safetensors")
    model = popcli.load("demo.safetensors")
"""

__version__ = "0.1.0"

from .errors import PopcliError  # noqa: E402



def load(path, device="cpu", mask=None):
    """The subnetwork of an artifact as an eval-mode ``torch.nn.Module`` (see ``popcli.artifact.load``);
    ``mask`` names one of a multi-mask file's masks (None: its first)."""
    from .artifact import load as _load

    return _load(path, device, mask)


def save(model, path, **kwargs):
    """Write a popcli-built model as an artifact (see ``popcli.artifact.save`` for the arguments)."""
    from .artifact import save as _save

    return _save(model, path, **kwargs)


def subnetify(module, density, **kwargs):
    """Conv2d/Linear -> subnet layers at ``density`` (see ``popcli.nn.subnetify`` for the arguments)."""
    from .nn import subnetify as _subnetify

    return _subnetify(module, density, **kwargs)


def __getattr__(name: str):
    """``popcli.search``: the search module, which is callable (``popcli.search(model_or_recipe, train, test, ...)``,
    see ``popcli.user_search.search_api``); imported on first use so that ``import popcli`` stays light."""
    if name == "search":
        import importlib

        return importlib.import_module(".search", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PopcliError", "__version__", "load", "save", "search", "subnetify"]
