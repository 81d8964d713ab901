"""A search run (its last.pt) or a checkpoint -> the searched model, and its artifact.

``find_checkpoint(source)`` is a run folder's last.pt (or a checkpoint given as such);
``model_from_checkpoint(path)`` rebuilds the model the search had (scores, stored tensors) with
its recipe, data description and metrics, once the trust rule allows the builder its recipe
names (``models.trust``: a run folder may come from elsewhere; ``trust_code`` opts in);
``write_artifact`` writes it with ``artifact.save`` (the run's final figures from summary.json
when they belong to that checkpoint) and returns the written file's ``inspect`` report; ``export_run`` is that for ``popcli export RUN -o OUT``.
Nothing here prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import artifact, codecs
from ..data.facts import fixed_input
from ..errors import RunError, UsageError
from ..methods import iterand
from ..methods.schedule import set_density
from ..models import build_model, init_density, input_size, trust
from ..recipe import Recipe, from_dict
from ..storage.checkpoint import load_checkpoint


def find_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, or the last.pt of a run folder."""
    source = Path(source)
    if source.is_dir():
        if not (source / "last.pt").is_file():
            raise RunError(f"run folder {str(source)!r} has no last.pt; run `popcli search --out {source}` first")
        return source / "last.pt"
    if not source.exists():
        raise RunError(f"{str(source)!r} not found; pass a run folder or a checkpoint (.pt) written by popcli search")
    return source


def _data_info(state: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    if "data_info" in state:
        return state["data_info"]
    if recipe.data.dataset == "synthetic":
        return {"shape": list(recipe.data.shape), "num_classes": recipe.data.num_classes}
    fixed = fixed_input(recipe.data.dataset)
    if fixed is not None:  # checkpoints written before they stored their input shape
        shape, classes = fixed
        return {"shape": shape, "num_classes": classes}
    raise RunError("this checkpoint does not record its input shape; re-run the search with this popcli version")


def model_from_checkpoint(path: Path, trust_code: bool = False) -> tuple[torch.nn.Module, Recipe, dict[str, Any],
                                                                         dict[str, Any]]:
    """(model in eval mode with the checkpoint's scores/weights, recipe, data info, metrics);
    UntrustedCodeError when its recipe names a builder that needs ``trust_code``."""
    state = load_checkpoint(path)
    try:
        recipe = from_dict(state["recipe"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise RunError(f"{path} does not hold a valid recipe ({str(err).splitlines()[0][:160]})") from None
    trust.check_recipe(recipe, trust_code=trust_code, source=str(path))
    try:
        info = _data_info(state, recipe)
        model = build_model(recipe.model, recipe.search, in_channels=info["shape"][0], image_size=input_size(info["shape"]),
                            num_classes=info["num_classes"], seed=recipe.seed)
        model.load_state_dict(state["model"])
        iterand.enable(model, recipe.search, recipe.seed, recipe.model.init, init_density(recipe.search))
        iterand.restore(model, state.get("iterand"))  # which draw each weight holds (the writer checks them)
    except (KeyError, RuntimeError, ValueError) as err:
        raise RunError(f"{path} does not match the model its recipe builds ({str(err).splitlines()[0][:160]})") from None
    metrics = dict(state.get("metrics") or {})
    metrics.setdefault("steps", state.get("progress", {}).get("global_step"))
    reached = state.get("density")  # a density anneal stopped early: the masks its metrics were measured with
    if isinstance(reached, float) and reached != recipe.search.density:
        set_density(model, reached)
        metrics["density_reached"] = reached
    return model.eval(), recipe, info, metrics


def write_artifact(ckpt: Path, out: Path, codec: str, force: bool,
                   trust_code: bool = False) -> tuple[torch.nn.Module, Recipe, dict, dict]:
    """Rebuild the searched model from ``ckpt`` and write its artifact; (model, recipe, data info, report)."""
    model, recipe, info, metrics = model_from_checkpoint(ckpt, trust_code)
    summary = ckpt.parent / "summary.json"
    if ckpt.name == "last.pt" and summary.is_file():  # the run's final figures, when they belong to last.pt
        try:
            metrics.update({k: v for k, v in json.loads(summary.read_text()).items()
                            if k in ("test_acc", "test_loss", "val_acc", "steps", "epochs", "wall_s")})
        except (OSError, json.JSONDecodeError):
            pass
    written = artifact.save(model, out, recipe=recipe, data_info=info, metrics=metrics, codec=codec, force=force,
                            checkpoint_bytes=ckpt.stat().st_size)
    return model, recipe, info, artifact.inspect(written, trust_code=True)  # its builder was just built here


def check_codec(codec: str) -> None:
    if codec != "auto" and codec not in codecs.CODECS:
        raise UsageError(f"unknown codec {codec!r}; choose auto or one of: {', '.join(codecs.CODECS)}")


def export_run(source: Path, out: Path, codec: str, force: bool,
               trust_code: bool = False) -> tuple[torch.nn.Module, Recipe, dict, dict]:
    """``popcli export RUN -o OUT``: the artifact of a run folder or checkpoint (not of an artifact)."""
    check_codec(codec)
    if artifact.is_safetensors(source):
        raise UsageError(f"{source} is already an artifact: drop -o (or export from its run folder)")
    return write_artifact(find_checkpoint(source), out, codec, force, trust_code)
