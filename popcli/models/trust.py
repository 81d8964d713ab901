"""The trust rule: which model builder named in a file popcli may build (docs/BRING_YOUR_OWN.md).

A file popcli reads (an artifact, a run folder's recipe.yaml, a checkpoint's recipe) names its
model's builder in ``model.arch`` (and, for a user's model, where the code lives in
``model_source``). Building a model can import and run code, and a file is not code the user
chose to run, so popcli builds a model a file names only when its builder is already trusted:

- ``popcli``: one of popcli's own registered architectures;
- ``registered``: a name registered in this process by code the user imported (``register_model``):
  nothing new is imported;
- ``built``: an import path this process already built (the user's own recipe or model did, or a
  load the user trusted): nothing new is imported;
- ``entry_point``: an installed package's ``popcli.models`` entry point (the user installed it);

and anything else (``import``: an import path ``"pkg.mod:fn"``; ``package``: a name registered by
a package not imported here) only when the user opts in for this call: ``trust_code=True`` in
Python, ``--trust-code`` on the command line (the convention of transformers'
``trust_remote_code``). ``none``: the file records no builder (a model popcli cannot rebuild by
name: load it into your own module, ``popcli.load(path, model=...)``). A recipe the user passes
(a YAML file, ``--set``, ``create_model``) is the user's own code and is not checked here.

``describe(arch, record)`` says which builder a file names, importing nothing (what ``popcli
inspect`` shows); ``check(info, trust_code=..., source=...)`` raises ``UntrustedCodeError``, one
line naming the builder and how to opt in. The import itself happens later, in ``external``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UntrustedCodeError
from .external import entry_point, is_built, is_import_path, package_of
from .registry import registered_builder

NO_BUILDER = ""  # model.arch of a model popcli cannot rebuild by name (popcli.save of any subnetified module)
TRUSTED = ("popcli", "registered", "built", "entry_point")  # kinds built without the user's opt-in
IMPORTED = ("popcli", "registered", "built")  # kinds whose code is already imported in this process


@dataclass(frozen=True)
class BuilderInfo:
    """The builder a file names, as far as it can be told without importing anything."""

    arch: str
    kind: str  # popcli | registered | built | entry_point | import | package | none | unknown (module docstring)
    target: str | None = None  # "module:function"
    package: str | None = None  # distribution name (as installed, or as the file records it)
    version: str | None = None

    @property
    def trusted(self) -> bool:
        """Whether popcli builds it without the user's opt-in."""
        return self.kind in TRUSTED

    @property
    def imported(self) -> bool:
        """Whether building it imports nothing new (``popcli inspect`` builds only these)."""
        return self.kind in IMPORTED

    def label(self) -> str:
        """The builder in a few words, for a message: "'pkg.mod:fn' (package pkg 1.0)"."""
        where = f"{self.target!r}" if self.target and self.target != self.arch else ""
        text = f"{self.arch!r}" + (f", registered by {where}" if self.kind == "package" and where
                                   else f" -> {where}" if where else "")
        if self.package:
            text += f" (package {self.package}{' ' + self.version if self.version else ''})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "kind": self.kind, "target": self.target, "package": self.package,
                "version": self.version, "trusted": self.trusted}


def describe(arch: str, record: dict[str, Any] | None = None) -> BuilderInfo:
    """Which builder ``arch`` (with the file's ``model_source`` ``record``) names; imports nothing.
    The record's package and version are shown as the file states them, never acted on."""
    if arch == NO_BUILDER:
        return BuilderInfo(arch, "none")
    builder = registered_builder(arch)
    if builder is not None:
        module = getattr(builder, "__module__", "") or ""
        target = f"{module}:{getattr(builder, '__qualname__', '?')}"
        if module == "popcli" or module.startswith("popcli."):
            return BuilderInfo(arch, "popcli", target)
        return BuilderInfo(arch, "registered", target, *package_of(module))
    record = record if isinstance(record, dict) else {}
    recorded = (record.get("package"), record.get("version"))
    if is_import_path(arch):
        package = recorded if record.get("target") == arch else (None, None)
        return BuilderInfo(arch, "built" if is_built(arch) else "import", arch, *package)
    found = entry_point(arch)
    if found is not None:
        return BuilderInfo(arch, "entry_point", *found)
    if record.get("kind") == "registered" and isinstance(record.get("target"), str):
        return BuilderInfo(arch, "package", record["target"], *recorded)
    return BuilderInfo(arch, "unknown")  # building it is "unknown model": nothing is imported


def check(info: BuilderInfo, *, trust_code: bool, source: str, own_model: bool = True) -> None:
    """UntrustedCodeError unless ``info``'s builder may be built here (trusted, or ``trust_code``);
    ``source`` names the file, ``own_model`` offers ``popcli.load(path, model=...)`` (artifacts)."""
    if info.trusted or trust_code or info.kind in ("none", "unknown"):
        return
    other = ", or load it into a module you build: popcli.load(path, model=...)" if own_model else ""
    raise UntrustedCodeError(f"{source} names the model builder {info.label()}; popcli does not import code named "
                             f"in a file unless you trust it: pass --trust-code (Python: trust_code=True){other}")


def check_recipe(recipe, *, trust_code: bool, source: str, record: dict[str, Any] | None = None) -> BuilderInfo:
    """``check`` for the model of a recipe read from a file (a run folder, a checkpoint)."""
    info = describe(recipe.model.arch, record)
    check(info, trust_code=trust_code, source=source, own_model=False)
    return info
