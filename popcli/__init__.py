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



def load(path, device="cpu", mask=None, mode="infer", fold_bn=True):
    """The subnetwork of an artifact as an eval-mode ``torch.nn.Module`` (see ``popcli.artifact.load``):
    ``mode="infer"`` plain frozen layers at dense speed (batch norm folded unless ``fold_bn=False``,
    which keeps the logits bit for bit), ``mode="search"`` subnet layers with scores (bit for bit);
    ``mask`` names one of a multi-mask file's masks (None: its first)."""
    from .artifact import load as _load

    return _load(path, device, mask, mode=mode, fold_bn=fold_bn)


def save(model, path, **kwargs):
    """Write a popcli-built model as an artifact (see ``popcli.artifact.save`` for the arguments);
    a model from ``create_model``/``subnetify`` needs no recipe."""
    from .artifact import save as _save

    return _save(model, path, **kwargs)


def create_model(arch, **kwargs):
    """A registered architecture ready to search, describing itself (see ``popcli.library.create_model``)."""
    from .library import create_model as _create

    return _create(arch, **kwargs)


def subnetify(module, density=0.5, **kwargs):
    """Any torch module -> subnet layers with portable weights (see ``popcli.library.subnetify``)."""
    from .library import subnetify as _subnetify

    return _subnetify(module, density, **kwargs)


def __getattr__(name: str):
    """``popcli.search``: the search module, which is callable (``popcli.search(model_or_recipe, train, test, ...)``,
    see ``popcli.user_search.search_api``); imported on first use so that ``import popcli`` stays light."""
    if name == "search":
        import importlib

        return importlib.import_module(".search", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PopcliError", "__version__", "create_model", "load", "save", "search", "subnetify"]
