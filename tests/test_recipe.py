"""Recipes: defaults, YAML + --set overrides, and errors that name the key."""

import pytest

from popcli import recipe as recipes
from popcli.errors import RecipeError


def test_packaged_quickstart_loads():
    r = recipes.load()
    assert (r.model.arch, r.data.dataset, r.search.method) == ("fc", "fashion-mnist", "edge-popup")


def test_overrides_parse_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {arch: conv4}\nsearch: {lr: 0.1}\n")
    r = recipes.load(path, ["search.lr=0.05", "data.shape=[1,28,28]", "search.max_steps=10", "seed=7",
                            "search.density=1", "data.data_dir=null",
                            "search.weight_decay=1e-4"])
    assert r.search.lr == 0.05 and r.data.shape == [1, 28, 28] and r.search.max_steps == 10 and r.seed == 7
    assert r.search.density == 1.0 and isinstance(r.search.density, float) and r.data.data_dir is None
    assert r.search.weight_decay == 1e-4  # YAML 1.1 reads 1e-4 as a string; floats accept it
    assert recipes.from_dict(r.to_dict()) == r  # the saved recipe round-trips


@pytest.mark.parametrize("override,fragment", [
    ("search.lr=abc", "search.lr"),
    ("search.foo=1", "search.foo"),
    ("bogus.key=1", "bogus.key"),
    ("search.density=1.5", "search.density"),
    ("search.density=0", "search.density"),
    ("model.init=bogus", "model.init"),
    ("search.optimizer=rmsprop", "search.optimizer"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.batch_size=2.5", "data.batch_size"),
    ("data.shape=[3,32]", "data.shape"),
    ("model.hidden=[10,x]", "model.hidden[1]"),
    ("seed=-1", "seed"),
    ("search.lr", "--set"),
    ("search.augment=yes please", "search.augment"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(RecipeError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        recipes.load(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        recipes.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        recipes.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(RecipeError, match="mapping"):
        recipes.load(bad)
    bad.write_text("model:\n  archh: conv4\n")
    with pytest.raises(RecipeError, match="model.archh"):
        recipes.load(bad)


def test_every_shipped_recipe_loads():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "recipes"
    shipped = sorted(folder.glob("*.yaml"))
    assert len(shipped) >= 8
    for path in shipped:
        recipe = recipes.load(path)
        assert recipe.model.arch and 0 < recipe.search.density <= 1, path
