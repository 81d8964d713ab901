"""``popcli models``, ``popcli recipes``, ``popcli recipe show`` and ``popcli runs``: what is
there to run, every key a recipe has, and what has been run. Registered on ``app.app``; the
work is in ``models.lookup``, ``recipe.catalog``, ``recipe.keys`` and ``sweep.runs_index``, this
module renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from . import examples
from .app import app, guard, out_console, print_json


@app.command(epilog=examples.MODELS)
@guard
def models(as_json: bool = typer.Option(False, "--json", help="Print {name: description} as JSON.")) -> None:
    """List the registered architectures (use them as model.arch)."""
    from ..models import model_descriptions

    registered = model_descriptions()
    if as_json:
        print_json(registered)
        return
    table = Table("name", "description", title="models (model.arch)", title_justify="left")
    for name, description in registered.items():
        table.add_row(name, description)
    out_console.print(table)


recipe_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect recipes.")
app.add_typer(recipe_app, name="recipe")


@app.command("recipes", epilog="Example: popcli recipes; then popcli search cifar10-conv4 or popcli recipe show cifar10-conv4")
@guard
def recipes_command(as_json: bool = typer.Option(False, "--json", help="Print {name: description} as JSON.")) -> None:
    """List the recipes shipped with popcli (pass a name where a recipe file goes: popcli search NAME)."""
    from ..recipe.catalog import packaged

    found = packaged()
    if as_json:
        print_json(found)
        return
    width = max(map(len, found), default=0)
    for name, line in found.items():  # one line each, like `pip list`; recipes/README.md has the long form
        out_console.print(f"{name:<{width}}  {escape(line)}", highlight=False, soft_wrap=True)


def show_recipe(recipe, as_json: bool) -> None:
    """Every key of the resolved ``recipe``: type, range or choices, default and value."""
    from ..recipe.keys import describe_keys

    rows = describe_keys(recipe)
    if as_json:
        print_json(rows)
        return
    width = max(len(f"{r['key']}: {r['value']}") for r in rows)
    for row in rows:  # key: value   # type, range, default; meaning  (valid YAML: comments after values)
        kind = f"one of {' | '.join(row['choices'])}" if row["choices"] else row["type"]
        if row["range"]:
            lo, hi = row["range"]
            kind += f" in ({_num(lo)}, {_num(hi)}]" if row["key"] == "search.density" else f" in [{_num(lo)}, {_num(hi)}]"
        changed = "" if row["value"] == row["default"] else " (changed)"
        text = f"{row['key']}: {_yaml(row['value'])}"
        out_console.print(f"{escape(text):<{width}}  # {escape(kind)}; default {escape(_yaml(row['default']))}"
                          f"{changed}{'; ' + escape(row['help']) if row['help'] else ''}", highlight=False, soft_wrap=True)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _yaml(value: Any) -> str:
    import json

    return "null" if value is None else json.dumps(value) if isinstance(value, (str, list, bool)) else str(value)


@recipe_app.command("show", epilog="Example: popcli recipe show cifar10-conv4 --set search.density=0.3")
@guard
def recipe_show(
    recipe_path: Optional[str] = typer.Argument(None, metavar="[RECIPE]", help="YAML file or packaged name; omitted: the quick start."),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a key (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the keys as a JSON list on stdout."),
) -> None:
    """Print the resolved recipe: every key with its value, default, type and range, then exit."""
    from .. import recipe as recipes

    show_recipe(recipes.load(recipe_path, overrides), as_json)


@app.command("runs", epilog="Example: popcli runs sweeps/d --csv sweeps/d/index.csv")
@guard
def runs_command(
    folder: Path = typer.Argument(Path("runs"), help="Folder searched (at any depth) for finished runs."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the rows to this CSV file (e.g. runs/index.csv)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as a JSON list on stdout."),
) -> None:
    """One row per finished search under FOLDER: what was searched and what it reached."""
    from ..sweep.runs_index import index, write_index

    rows = index(folder)
    if csv_path is not None:
        write_index(rows, csv_path)
    if as_json:
        print_json(rows)
        return
    table = Table("run", "arch", "dataset", "method", "init", "density", "seed", "epochs", "test acc", "top-5",
                  "weights kept", "wall s", title=f"finished runs in {folder} ({len(rows)})", title_justify="left")
    for r in rows:
        table.add_row(escape(r["run"]), *(escape(str(r[k])) for k in ("arch", "dataset", "method", "init")),
                      f"{r['density']:g}" if r["density"] is not None else "", str(r["seed"]),
                      f"{r['epochs']:.2f}" if r["epochs"] is not None else "", _pct(r["test_acc"]), _pct(r["test_top5"]),
                      f"{r['params_kept']:,}" if r["params_kept"] is not None else "",
                      f"{r['wall_s']:.0f}" if r["wall_s"] is not None else "")
    out_console.print(table)


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else ""
