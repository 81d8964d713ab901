"""Models whose code is not popcli's: import paths, the ``popcli.models`` entry points, and the
record an artifact keeps of them so that another process can rebuild them.

Three ways a user's model reaches popcli (``model.arch``):

- an import path ``"mypkg.nets:build"``: the callable ``build`` of module ``mypkg.nets``;
- an entry point name ``"mynet"`` declared by an installed package in the group
  ``popcli.models`` (``[project.entry-points."popcli.models"] mynet = "mypkg.nets:build"``);
- a name registered with ``register_model`` by importable user code (``mypkg.nets``): the
  artifact records the module, and loading imports it (which registers the name again).

A user callable receives the keyword arguments of the builder contract (``registry``) that its
signature accepts (all of them if it takes ``**kwargs``). If it names ``conv_layer`` or
``linear_layer`` as parameters it follows the contract and builds subnet layers itself; otherwise it is a
plain torch constructor: it is called on the meta device (it allocates nothing and draws no
random numbers) and ``nn.to_subnet_layers`` converts its Conv2d/Linear onto the caller's device
with the recipe's ``model.biases`` and ``model.norms`` (by default biases dropped, norms
non-affine, as ``popcli.subnetify``). ``source_record(arch)`` is what an artifact stores
(kind, target, package and version); ``require_source(record)`` makes a fresh process able to
build it again or raises a one-line ModelError naming the package to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import inspect
import re
import sys
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import ModelError
from .registry import is_registered, registered_builder

GROUP = "popcli.models"  # the entry-point group user packages declare their models in
_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}  # arch -> wrapped builder, per process


def is_import_path(arch: str) -> bool:
    return ":" in arch


class _Unimportable(Exception):
    """Why a target cannot be imported, in a few words (wrapped into a ModelError by the callers)."""


def _resolve(target: str) -> Any:
    """The object ``module:attr.path`` names, or _Unimportable with a short reason."""
    module_name, _, attr = target.partition(":")
    if module_name.split(".")[0] in sys.stdlib_module_names:  # an artifact must not make popcli run stdlib code
        raise _Unimportable(f"{module_name!r} is a standard-library module, not model code")
    try:
        with torch.device("cpu"):  # module-level tensors are real even when a caller builds on meta
            obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise _Unimportable(f"module {err.name or module_name!r} is not importable") from None
    except Exception as err:  # user code failed at import: its own one-line reason
        line = (str(err).strip().splitlines() or [""])[0][:200]
        raise _Unimportable(f"importing {module_name!r} failed ({type(err).__name__}: {line})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _Unimportable(f"module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise _Unimportable(f"{attr!r} is not callable (point it at a function that returns an nn.Module)")
    return obj


def import_target(target: str, what: str = "model.arch") -> Any:
    """The callable ``module:attr.path`` names; a one-line ModelError when it cannot be imported."""
    if not _TARGET.match(target):
        raise ModelError(f"{what} {target!r} is not an import path; write it as 'package.module:function'")
    try:
        return _resolve(target)
    except _Unimportable as err:
        raise ModelError(f"{what} {target!r}: {err}; install the package that provides it or put its folder "
                         f"on PYTHONPATH") from None


def _entry_points() -> dict[str, metadata.EntryPoint]:
    """{name: entry point} of the ``popcli.models`` group (first wins, as importlib orders them)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def entry_point_names() -> dict[str, str]:
    """{name: "target (from package version)"} of the installed ``popcli.models`` entry points."""
    return {name: f"{ep.value} (entry point of {_dist_label(ep)})" for name, ep in _entry_points().items()}


def entry_point(name: str) -> tuple[str, str | None, str | None] | None:
    """(target, package, version) of the installed ``popcli.models`` entry point ``name``, or None.
    Reading the installed metadata imports nothing."""
    ep = _entry_points().get(name)
    if ep is None:
        return None
    dist = getattr(ep, "dist", None)
    return ep.value, (dist.name if dist is not None else None), (dist.version if dist is not None else None)


def _dist_label(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


# --------------------------------------------------------------------------- building


def _call_kwargs(fn: Callable, contract: dict[str, Any], label: str) -> dict[str, Any]:
    """The contract's keyword arguments that ``fn`` accepts; a required one it lacks is an error."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(contract)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(contract)
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_POSITIONAL \
                and name not in contract:
            raise ModelError(f"model {label!r}: its builder requires argument {name!r}, which popcli does not pass; "
                             f"builders take keywords from: {', '.join(contract)} (see docs/FORMAT.md)")
    return {k: v for k, v in contract.items() if k in params}


def _named_parameters(fn: Callable) -> set[str]:
    try:
        return {name for name, p in inspect.signature(fn).parameters.items()
                if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    except (TypeError, ValueError):
        return set()


def wrap_builder(fn: Callable, label: str) -> Callable[..., nn.Module]:
    """A registry-contract builder around the user callable ``fn`` (see the module docstring)."""
    from ..nn import SubnetMixin, to_subnet_layers

    def build(**contract: Any) -> nn.Module:
        biases, norms = contract.pop("biases", "drop"), contract.pop("norms", "nonaffine")  # model.biases / .norms
        kwargs = _call_kwargs(fn, contract, label)
        follows_contract = bool({"conv_layer", "linear_layer"} & _named_parameters(fn))  # named, not via **kwargs
        device = torch.get_default_device()  # the caller's: cpu, or meta when a loader builds the structure
        try:
            if follows_contract:
                model = fn(**kwargs)
            else:
                with torch.device("meta"):
                    model = fn(**kwargs)
        except ModelError:
            raise
        except Exception as err:
            line = (str(err).strip().splitlines() or [""])[0][:200]
            raise ModelError(f"model {label!r}: its builder failed ({type(err).__name__}: {line})") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model {label!r}: its builder returned {type(model).__name__}, not a torch.nn.Module")
        if follows_contract or any(isinstance(m, SubnetMixin) for m in model.modules()):
            return model
        density = contract.get("density")
        convert = {"nonaffine_norms": norms == "nonaffine", "keep_biases": biases != "drop", "device": device}
        if density is None:  # dense baseline: every weight layer plain and trainable
            return to_subnet_layers(model, 1.0, keep_dense=lambda name, layer: True, **convert)
        return to_subnet_layers(model, density, **convert)

    build.__name__ = build.__qualname__ = f"external[{label}]"
    build.popcli_policies = True  # build_architecture passes model.biases / model.norms (as subnetify takes them)
    return build


def is_built(arch: str) -> bool:
    """Whether this process already built ``arch`` from an import path or an entry point (its code
    is imported, by the user's own recipe or model, or by a load the user trusted)."""
    return arch in _BUILDERS


def find_builder(arch: str) -> Callable[..., nn.Module] | None:
    """The builder of an import path or an entry-point name, or None when ``arch`` is neither."""
    if arch in _BUILDERS:
        return _BUILDERS[arch]
    if is_import_path(arch):
        builder = wrap_builder(import_target(arch), arch)
    else:
        ep = _entry_points().get(arch)
        if ep is None:
            return None
        builder = wrap_builder(import_target(ep.value, f"entry point {arch!r} ({_dist_label(ep)})"), arch)
    _BUILDERS[arch] = builder
    return builder


# --------------------------------------------------------------------------- the artifact's record


def package_of(module_name: str) -> tuple[str, str | None]:
    """(distribution name, version) owning ``module_name``; the top-level module name and its
    ``__version__`` (or None) when no installed distribution provides it (a PYTHONPATH folder)."""
    top = module_name.split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    if dists:
        try:
            return dists[0], metadata.version(dists[0])
        except metadata.PackageNotFoundError:
            pass
    version = getattr(sys.modules.get(top), "__version__", None)
    return top, str(version) if version is not None else None


def source_record(arch: str) -> dict[str, Any] | None:
    """Where ``arch``'s code lives, for the artifact's ``model_source``; None for popcli's own models."""
    builder = registered_builder(arch)
    if builder is not None:
        module = getattr(builder, "__module__", "") or ""
        if module == "popcli" or module.startswith("popcli."):
            return None
        package, version = package_of(module)
        return {"kind": "registered", "target": f"{module}:{builder.__qualname__}", "package": package,
                "version": version}
    if is_import_path(arch):
        package, version = package_of(arch.partition(":")[0])
        return {"kind": "import", "target": arch, "package": package, "version": version}
    ep = _entry_points().get(arch)
    if ep is None:
        return None
    dist = getattr(ep, "dist", None)
    package, version = (dist.name, dist.version) if dist is not None else package_of(ep.value.partition(":")[0])
    return {"kind": "entry_point", "group": GROUP, "target": ep.value, "package": package, "version": version}


def require_source(arch: str, record: dict[str, Any] | None) -> None:
    """Make ``arch`` buildable in this process from an artifact's ``record``, or raise a one-line
    ModelError naming the package (and version) to install. It imports code: callers check first
    that the file's builder may be imported (``models.trust``). Only ``arch`` decides what is
    imported (its module, its entry point, or for a name registered by a package the record's
    module, which must register it); the record's package and version only word the error."""
    if not isinstance(record, dict) or is_registered(arch):
        return
    kind, target = record.get("kind"), str(record.get("target", ""))
    package = str(record.get("package") or target.split(".")[0].split(":")[0])
    wanted = f"{package}=={record['version']}" if record.get("version") else package
    if kind == "registered" and target.startswith("__main__:"):
        raise ModelError(f"model {arch!r} was registered by a script (__main__), which another process cannot import; "
                         f"move its builder into an importable module or declare a {GROUP!r} entry point")
    try:
        if is_import_path(arch):
            _resolve(arch)  # what will be built, whatever the record says
        elif kind == "entry_point" or arch in _entry_points():
            if arch not in _entry_points():
                raise _Unimportable(f"no installed package declares the {GROUP!r} entry point {arch!r}")
        elif kind == "registered" and _TARGET.match(target):
            _resolve(target)  # a registered model's module registers it again when imported
            if not is_registered(arch):
                raise _Unimportable(f"importing {target.partition(':')[0]!r} did not register {arch!r}")
        else:
            raise _Unimportable(f"the recorded target {target!r} is not an import path")
    except _Unimportable as err:
        raise ModelError(f"model {arch!r} needs package {package!r}"
                         f"{' ' + str(record['version']) if record.get('version') else ''}, which is not available "
                         f"here ({err}); pip install {wanted!r} or put it on PYTHONPATH") from None
