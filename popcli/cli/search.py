"""``popcli search``: a recipe (or the quick start) searched into a run folder, with progress."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import typer

from ..errors import Interrupted, RunError
from . import complete, examples, tables
from .app import StopFlag, app, err_console, guard, option_overrides, out_console, print_json


def _default_run_dir(recipe) -> Path:
    """runs/<arch>-<dataset>-<method>-d<density>-s<seed>: one folder under runs/, whatever the names hold."""
    r = recipe
    name = f"{r.model.arch.replace(':', '.')}-{r.data.dataset}-{r.search.method}-d{r.search.density:g}-s{r.seed}"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")


@app.command(epilog=examples.SEARCH)
@guard
def search(
    recipe_path: Optional[Path] = typer.Argument(None, metavar="RECIPE", autocompletion=complete.recipes,
                                                 help="YAML recipe or a packaged recipe's name (popcli recipes); omitted: the Fashion-MNIST quick start."),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", autocompletion=complete.key_values,
                                        help="Override a recipe key, value parsed as YAML (repeatable), e.g. --set search.density=0.3"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder [default: runs/<arch>-<dataset>-<method>-d<density>-s<seed>]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing run folder (replaces its run files)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps (sets search.device)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset folder (sets data.data_dir; only it is searched)."),
    show: bool = typer.Option(False, "--show-recipe", help="Print the resolved recipe (every key, type, range, default) and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    trust_code: bool = typer.Option(False, "--trust-code", help="--resume: import the model code the run folder's recipe names when it is not popcli's own or an installed entry point."),
) -> None:
    """Search a subnetwork: train one score per frozen random weight, keep the top-k per layer."""
    from .. import recipe as recipes
    from ..engine.loop import search as run_search
    from ..engine.runtime import keep_freed_memory
    from ..sweep.pool import follow_parent
    from .progress import SearchDisplay

    follow_parent()  # a worker of `popcli sweep -j N` dies with the sweep (no-op otherwise)
    keep_freed_memory()  # steadier, faster CPU steps; process-wide, so the CLI decides

    overrides = [*overrides, *option_overrides(device=device, data_dir=data_dir)]
    if resume and recipe_path is None and out is not None:
        if not (out / "recipe.yaml").is_file():
            raise RunError(f"nothing to resume in {str(out)!r}: no run there (no recipe.yaml); start one with "
                           f"popcli search --out {out}")
        recipe_path = out / "recipe.yaml"
    recipe = recipes.load(recipe_path, overrides)
    if resume and recipe_path == (out / "recipe.yaml" if out else None) and \
            not any(o.replace(" ", "").startswith("model.arch=") for o in overrides):
        from ..models import trust  # a run folder may come from elsewhere: its recipe follows the file rule

        trust.check_recipe(recipe, trust_code=trust_code, source=str(recipe_path))
    if show:
        from .catalog import show_recipe

        return show_recipe(recipe, as_json, recipe_path, overrides)
    run_dir = out or _default_run_dir(recipe)
    load_artifact = None
    if recipe.search.distill_teacher:  # an artifact teacher loads with the file rule (engine.distill)
        from ..artifact import load as load_artifact
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 shows and prints
    try:
        with StopFlag() as stop, SearchDisplay(err_console, enabled=not quiet and main_rank) as display:
            summary = run_search(recipe, run_dir, resume=resume, force=force, on_event=display.handle, should_stop=stop,
                                 load_artifact=load_artifact)
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint of this moment; say what gets out
        how = (f"resume from its last checkpoint: popcli search --resume --out {run_dir}" if (run_dir / "last.pt").is_file()
               else "it had no checkpoint yet: run the same command again to start it")
        raise Interrupted(f"aborted; {how}") from None
    if not main_rank:
        return
    if as_json:
        print_json(summary)
    else:
        out_console.print(tables.summary_table(summary))
