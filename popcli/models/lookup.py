"""Finding a model by name: popcli's registry, installed ``popcli.models`` entry points, or an
import path ``"package.module:function"`` (``external``).

``get_model_builder(name)`` is the builder ``build_architecture`` calls; ``model_descriptions``
and ``list_models`` are what ``popcli models`` and ``popcli.list_models`` show, filtered by a
shell-style pattern (``"tv_*"``) as ``timm.list_models`` is; ``canonical_arch`` maps an old name
(``resnet50``) to its registered one (``tv_resnet50``). Importing this module registers
popcli's own architectures (``paper``, ``resnet``, ``tv``).
"""

from __future__ import annotations

import fnmatch

from ..errors import ModelError, did_you_mean
from . import paper, resnet, tv  # noqa: F401  (importing registers the models)
from .external import entry_point_names, find_builder
from .registry import Builder, aliases, canonical_name, registered, registered_builder


def model_descriptions(pattern: str | None = None) -> dict[str, str]:
    """{name: one-line description}, sorted by name: the registry plus the installed
    ``popcli.models`` entry points (loaded only when built; see ``external``), the names matching
    ``pattern`` (fnmatch, e.g. ``"conv*"``) when one is given."""
    found = registered()
    for name, description in entry_point_names().items():
        found.setdefault(name, description)  # a registered name wins over an entry point
    names = sorted(n for n in found if pattern is None or fnmatch.fnmatchcase(n, pattern))
    return {name: found[name] for name in names}


def list_models(pattern: str | None = None) -> list[str]:
    """The model names (sorted) that ``model.arch`` accepts by name, matching ``pattern`` if given."""
    return list(model_descriptions(pattern))


def model_aliases() -> dict[str, str]:
    """{old name: its registered name}: renamed models still accepted (``popcli models`` lists them)."""
    return aliases()


def canonical_arch(name: str) -> str:
    """The name a run records for ``model.arch``: the registered name of an old alias, else ``name``."""
    return canonical_name(name)


def get_model_builder(name: str) -> Builder:
    """The builder of ``name``: registered, an installed ``popcli.models`` entry point, or an
    import path ``"package.module:function"``; an unknown name is a ModelError listing the valid ones."""
    builder = registered_builder(name)
    if builder is not None:
        return builder
    builder = find_builder(name)
    if builder is None:
        names = list_models()
        raise ModelError(f"unknown model {name!r}{did_you_mean(name, names)}; choose model.arch from: {', '.join(names)} "
                         f"(`popcli models` lists them), or give an import path 'package.module:function'")
    return builder
