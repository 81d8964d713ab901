"""popcli: find the sparse subnetworks hidden in randomly weighted networks, and ship them.

The public API, as timm and torchvision users expect it (the CLI in ``popcli.cli`` is a thin
layer over the same library):

    model = popcli.create_model("conv4", density=0.3, num_classes=10, input_shape=(3, 32, 32))
    model = popcli.subnetify(torchvision.models.resnet18(num_classes=10), density=0.5)
    summary = popcli.search(model, train_data, test_data, arch="mypkg.nets:build", run_dir="runs/x")
    summary = popcli.search(None, run_dir="runs/demo", overrides=["search.epochs=1"])  # the quick start
    popcli.save(model, "m.safetensors")
    model = popcli.load("m.safetensors")                  # inference: plain layers, dense speed
    popcli.list_models("conv*")

Each function is a thin wrapper that imports its stage on first use, so ``import popcli`` stays
light (no torch until a function is called). The stages live in subpackages, lowest first:
storage, kernels, rng/codecs/measure, nn, methods, recipe, data, models, engine, artifact,
deploy, export, sweep, cli (docs/ARCHITECTURE.md).
"""

from .errors import PopcliError, python_api
from .version import __version__


def load(path, device="cpu", mask=None, mode="infer", fold_bn=True, inputs=None, *, model=None, trust_code=False):
    """The subnetwork of an artifact as an eval-mode ``torch.nn.Module`` (``popcli.artifact.load``):
    ``mode="infer"`` plain frozen layers at dense speed (batch norm folded unless ``fold_bn=False``,
    which keeps the logits bit for bit), ``mode="search"`` subnet layers with scores (bit for bit),
    ``mode="packed"`` signed-constant layers run from keep and sign bits (~2 bits per weight,
    logits to float32 rounding; float inits refused: ``popcli.nn.packed``);
    ``mask`` names one of a multi-mask file's masks (None: its first), or ``"auto"``: the task of
    the images ``inputs`` [B, C, H, W] (SupSup's one-shot task inference, ``artifact.tasks``).
    ``model``: load into your own module (plain or subnetified; checked against the file,
    converted in place), as ``load_state_dict`` does. ``trust_code=True`` lets the file's builder
    be imported when it is not popcli's own or an installed entry point (a file never runs code
    otherwise). A missing file raises ``popcli.errors.ArtifactNotFound`` (a FileNotFoundError too)."""
    from .artifact.rebuild import load as load_artifact

    with python_api():
        return load_artifact(path, device, mask, mode=mode, fold_bn=fold_bn, inputs=inputs, model=model,
                             trust_code=trust_code)


def save(model, path, **kwargs):
    """Write a popcli-built model as an artifact (``popcli.artifact.save`` lists the arguments);
    a model from ``create_model``/``subnetify``/``search`` needs no recipe. Returns the artifact read back."""
    from .artifact.writer import save as save_artifact

    with python_api():
        return save_artifact(model, path, **kwargs)


def create_model(arch, **kwargs):
    """A registered architecture ready to search, describing itself (``popcli.models.factory.create_model``):
    ``create_model("conv4", density=0.3, num_classes=10, input_shape=(3, 32, 32))``."""
    from .models.factory import create_model as create

    with python_api():
        return create(arch, **kwargs)


def subnetify(module, density=0.5, **kwargs):
    """Any torch module -> subnet layers with portable weights (``popcli.models.factory.subnetify``)."""
    from .models.factory import subnetify as convert

    with python_api():
        return convert(module, density, **kwargs)


def search(model_or_recipe=None, train_data=None, test_data=None, **kwargs):
    """Search a subnetwork: a recipe (a Recipe, a YAML path, or None for the quick start; with
    ``overrides=[...]`` or keyword settings ``max_steps=100``, ``**{"data.batch_size": 64}``) or your
    own subnetified model with your own train and test Dataset or DataLoader; ``run_dir=`` is
    required (``popcli.engine.api.search_api``). The summary dict. An artifact named by
    ``search.distill_teacher`` is loaded with ``popcli.load`` (the engine does not import it)."""
    from .engine.api import search_api

    kwargs.setdefault("load_artifact", _load_teacher)
    with python_api():
        return search_api(model_or_recipe, train_data, test_data, **kwargs)


def _load_teacher(path):
    """An artifact teacher of ``search.distill_teacher``: ``load`` with the file rule (no trust_code)."""
    return load(path)


def list_models(pattern=None):
    """The registered model names (sorted), those matching ``pattern`` (``"tv_*"``) when given."""
    from .models.lookup import list_models as names

    return names(pattern)


__all__ = ["PopcliError", "__version__", "create_model", "list_models", "load", "save", "search", "subnetify"]
