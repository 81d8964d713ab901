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

from . import complete, examples
from .app import App, app, guard, out_console, print_json


@app.command(epilog=examples.MODELS)
@guard
def models(
    pattern: Optional[str] = typer.Argument(None, metavar="PATTERN", autocompletion=complete.models,
                                            help="Only names matching this shell-style pattern, e.g. 'tv_*' (quote it)."),
    as_json: bool = typer.Option(False, "--json", help="Print {name: description} as JSON."),
) -> None:
    """List the registered architectures (use them as model.arch)."""
    from ..models import model_aliases, model_descriptions

    registered = model_descriptions(pattern)
    if as_json:
        print_json(registered)
        return
    shown = f" matching {pattern!r}" if pattern else ""
    table = Table("name", "description", title=escape(f"models (model.arch){shown}"), title_justify="left")
    for name, description in registered.items():
        table.add_row(escape(name), escape(description))
    old = {alias: name for alias, name in model_aliases().items() if name in registered}
    if old:  # renamed in 0.3: the old names still work for one release
        table.caption = escape("old names, accepted until 0.4: " + ", ".join(f"{a} = {n}" for a, n in old.items()))
    if not registered:
        table.caption = escape(f"no model name matches {pattern!r}; `popcli models` lists them all")
    out_console.print(table)


recipe_app = App(no_args_is_help=True, rich_markup_mode=None, help="Inspect recipes.")
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


def show_recipe(recipe, as_json: bool, path=None, overrides: list[str] | None = None) -> None:
    """Every key of the resolved ``recipe`` (read from ``path``): type, range or choices, default
    and value; the text form starts with the recipes its keys come from (``base:``)."""
    from ..recipe.io import bases
    from ..recipe.keys import describe_keys

    rows = describe_keys(recipe)
    if as_json:
        print_json(rows)
        return
    sources = [*bases(path), *(["--set"] if overrides else [])]
    out_console.print(escape(f"# keys from: {' <- '.join(sources)}"), highlight=False, soft_wrap=True)
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
    recipe_path: Optional[str] = typer.Argument(None, metavar="RECIPE", autocompletion=complete.recipes,
                                                help="YAML file or packaged name; omitted: the quick start."),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", autocompletion=complete.key_values,
                                        help="Override a key (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the keys as a JSON list on stdout."),
) -> None:
    """Print the resolved recipe: every key with its value, default, type and range, then exit."""
    from .. import recipe as recipes

    show_recipe(recipes.load(recipe_path, overrides), as_json, recipe_path, overrides)


@app.command("runs", epilog="Examples: popcli runs sweeps/d --csv sweeps/d/index.csv; popcli plot sweeps/d/index.csv")
@guard
def runs_command(
    folder: Path = typer.Argument(Path("runs"), metavar="FOLDER", help="Folder searched (at any depth) for finished runs."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write every column to this CSV file (the "
                                                                  "schema of a sweep's results.csv: popcli plot reads it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows (every column) as a JSON list on stdout."),
) -> None:
    """One row per finished search under FOLDER: what was searched and what it reached (--csv, --json: every column)."""
    from rich import box

    from ..sweep.runs_index import index, write_index

    rows = index(folder)
    if csv_path is not None:
        write_index(rows, csv_path)
    if as_json:
        print_json(rows)
        return
    cells = [[escape(r["run"]), escape(str(r.get("model.arch"))), escape(str(r.get("search.method"))),
              _pct(r.get("kept_fraction"), 3), str(r.get("seed", "")), _pct(r.get("test_acc")),
              f"{r['steps']:,}" if isinstance(r.get("steps"), int) else "", _seconds(r.get("wall_s"))] for r in rows]
    table = Table(title=escape(f"finished runs in {folder} ({len(rows)})"), title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    names = ("run", "arch", "method", "kept", "seed", "test acc", "steps", "wall")
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(names)]
    # every column but the run's keeps its width; a long run name is cut (…) so that a row fits one line
    widths[0] = max(8, min(widths[0], out_console.width - sum(widths[1:]) - 3 * (len(names) - 1)))  # pad + rule
    for i, (name, width) in enumerate(zip(names, widths)):
        table.add_column(name, justify="left" if i < 3 else "right", no_wrap=True, overflow="ellipsis",
                         width=width)
    for row in cells:
        table.add_row(*row)
    out_console.print(table)


def _pct(value: Any, digits: int | None = None) -> str:
    """"89.20%" (or, with ``digits`` significant ones, "50%" / "1.25%"); "" for a missing value."""
    if not isinstance(value, (int, float)):
        return ""
    return f"{100 * value:.{digits}g}%" if digits else f"{100 * value:.2f}%"


def _seconds(value: Any) -> str:
    """"42 s", "13 min", "5.2 h": a wall time in a few characters."""
    if not isinstance(value, (int, float)):
        return ""
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"
