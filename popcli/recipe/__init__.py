"""The recipe: one typed object (seed + model / data / search sections) passed down everywhere.

``schema`` (the dataclasses, checks, method defaults), ``io`` (YAML files, packaged names,
``--set`` overrides), ``catalog`` (the recipes shipped in ``packaged/``), ``keys`` (the key
reference of ``popcli recipe show``). Imports ``errors``, ``rng`` (the init names, the seed
range) and ``methods`` (their optimizer defaults); nothing above them.
"""

from .io import dump, load, parse_override, parse_yaml
from .schema import DataConfig, ModelConfig, Recipe, SearchConfig, from_dict, resolve, set_key

__all__ = ["DataConfig", "ModelConfig", "Recipe", "SearchConfig", "dump", "from_dict", "load", "parse_override",
           "parse_yaml", "resolve", "set_key"]
