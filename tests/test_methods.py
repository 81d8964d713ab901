"""Search methods beyond edge-popup: optimizer defaults, biprop, signed supermask (popcli.methods)."""

from __future__ import annotations

import pytest
import torch

from popcli import methods
from popcli import recipe as recipes
from popcli.optim import make_optimizer
from popcli.recipe import SearchConfig


# --------------------------------------------------------------------------- optimizer defaults


@pytest.mark.parametrize("method", methods.NAMES)
def test_unset_optimizer_keys_take_the_methods_defaults(method):
    r = recipes.load(None, [f"search.method={method}"])  # the quick start sets none of them
    for key in methods.OPTIMIZER_KEYS:
        expected = methods.METHODS[method].optimizer[key]
        if key == "nesterov":  # the quick start sets nesterov: true for its SGD
            expected = True
        assert getattr(r.search, key) == expected, key
    assert all(r.to_dict()["search"][key] is not None for key in methods.OPTIMIZER_KEYS)  # shown resolved


def test_supermask_defaults_are_adam_without_decay_and_explicit_keys_win(tmp_path):
    r = recipes.load(None, ["search.method=supermask"])
    assert (r.search.optimizer, r.search.lr, r.search.weight_decay) == ("adam", 0.1, 0.0)
    r = recipes.load(None, ["search.method=supermask", "search.optimizer=sgd", "search.lr=0.3"])
    assert (r.search.optimizer, r.search.lr, r.search.weight_decay) == ("sgd", 0.3, 0.0)
    path = tmp_path / "r.yaml"
    path.write_text("search: {method: signed-supermask, weight_decay: 0.0}\n")
    r = recipes.load(path)
    assert (r.search.lr, r.search.nesterov, r.search.weight_decay) == (0.05, True, 0.0)
    assert recipes.from_dict(r.to_dict()) == r  # a resolved recipe keeps its values


def test_an_unresolved_config_still_builds_its_methods_optimizer():
    param = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer([param], SearchConfig(method="supermask"))
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 0.0
    opt = make_optimizer([param], SearchConfig(method="biprop"))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
