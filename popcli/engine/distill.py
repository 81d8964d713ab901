"""Knowledge distillation from a trained teacher during a search (Hinton, Vinyals and Dean 2015,
"Distilling the Knowledge in a Neural Network", arXiv:1503.02531).

With ``search.distill_teacher`` set, every training step's loss is

    (1 - w) * CE(student, y) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(``distill_loss``; w = ``search.distill_weight``, T = ``search.distill_temperature``; the T^2
keeps the soft term's gradients at the scale of the hard one's as T changes). The teacher is a
run folder (its last.pt), a checkpoint (.pt) or an artifact (.safetensors). Its logits are
computed once, before the first step, for every training sample in storage order (never
augmented: a table cannot follow a random crop) and kept in memory as float32 [N, K], so a step
costs one table lookup by the batch's sample indices (``Loader.indexed_batches``), not a teacher
forward.

A checkpoint is read with ``torch.load(weights_only=True)`` and its model built only when the
trust rule allows the builder it names (``models.trust``, as ``--resume`` does with a run
folder's recipe); an artifact is loaded by the caller's ``load_artifact`` (``popcli.load``,
passed down by the CLI and ``popcli.search``: the engine never imports the artifact layer).
The teacher file's SHA-256 is recorded in last.pt and summary.json: a resume recomputes the same
table (same logits as an uninterrupted run) and refuses a teacher that changed. Nothing prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import Loader, Splits
from ..errors import PopcliError, RecipeError, RunError, option
from ..methods.schedule import set_density
from ..models import build_model, input_size, trust
from ..recipe import DataConfig, SearchConfig, from_dict
from ..storage.atomic import file_sha256
from ..storage.checkpoint import load_checkpoint

ArtifactLoader = Callable[[Path], nn.Module]  # popcli.load(path): the artifact's model in eval mode
ARTIFACT_SUFFIX = ".safetensors"


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float, weight: float,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - w) CE(student, y) + w T^2 KL(softmax(teacher/T) || softmax(student/T)), batch mean;
    student, teacher float32 [B, K], y int64 [B]."""
    ce = F.cross_entropy(student, y, label_smoothing=label_smoothing)
    kl = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return (1.0 - weight) * ce + weight * temperature * temperature * kl


@dataclass
class Teacher:
    """A teacher model (eval mode, CPU) and what it was trained on, as far as its file says."""

    model: nn.Module
    path: Path  # the file read (a run folder's last.pt)
    sha256: str
    dataset: str | None
    permute_task: int | None
    shape: list[int] | None  # [C, H, W]


def teacher_file(source: str | Path) -> Path:
    """The file a ``search.distill_teacher`` names: an artifact, a checkpoint, or a run folder's last.pt."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise RecipeError(f"search.distill_teacher: run folder {str(path)!r} has no last.pt; train the teacher "
                              f"first (popcli search --set search.method=dense --out {path})")
        return path / "last.pt"
    if not path.is_file():
        raise RecipeError(f"search.distill_teacher: {str(path)!r} not found; give a teacher run folder, checkpoint "
                          f"(.pt) or artifact (.safetensors)")
    return path


def _from_checkpoint(path: Path) -> tuple[nn.Module, DataConfig, dict[str, Any]]:
    state = load_checkpoint(path, required=("model", "recipe"))
    try:
        recipe = from_dict(state["recipe"])
    except PopcliError as err:
        raise RunError(f"search.distill_teacher: {path} does not hold a valid recipe ({err})") from None
    trust.check_recipe(recipe, trust_code=False, source=f"search.distill_teacher {path}")  # a file never runs code
    info = state.get("data_info")
    if not isinstance(info, dict) or "shape" not in info or "num_classes" not in info:
        raise RunError(f"search.distill_teacher: {path} does not record its input shape (an older popcli); "
                       f"export it to an artifact and distill from that")
    try:
        model = build_model(recipe.model, recipe.search, in_channels=info["shape"][0],
                            image_size=input_size(info["shape"]), num_classes=info["num_classes"], seed=recipe.seed)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise RunError(f"search.distill_teacher: {path} does not match the model its recipe builds "
                       f"({str(err).splitlines()[0][:160]})") from None
    if isinstance(state.get("density"), float):  # a density anneal stopped early: the masks it was measured with
        set_density(model, state["density"])
    return model, recipe.data, info


def load_teacher(source: str | Path, load_artifact: ArtifactLoader | None = None) -> Teacher:
    """The teacher ``source`` names, on the CPU in eval mode (RecipeError / RunError, one line)."""
    path = teacher_file(source)
    sha = file_sha256(path)
    if path.suffix == ARTIFACT_SUFFIX:
        if load_artifact is None:
            raise RecipeError("search.distill_teacher: an artifact teacher is loaded by popcli search or "
                              "popcli.search; calling the engine directly, pass load_artifact=popcli.load")
        model = load_artifact(path)
        config = getattr(model, "popcli_data_config", None) or {}
        recipe = (getattr(model, "popcli_description", None) or {}).get("recipe")
        task = getattr(getattr(recipe, "data", None), "permute_task", None)
        return Teacher(model.eval(), path, sha, config.get("dataset"), task, config.get("input_shape"))
    model, data, info = _from_checkpoint(path)
    return Teacher(model.eval(), path, sha, data.dataset, data.permute_task, [int(d) for d in info["shape"]])


def _check_fits(teacher: Teacher, data: DataConfig, splits: Splits) -> None:
    """RecipeError unless the teacher reads this search's images (dataset, task, shape)."""
    where = f"search.distill_teacher: {teacher.path}"
    if teacher.dataset is not None and teacher.dataset != data.dataset:
        raise RecipeError(f"{where} was trained on {teacher.dataset} but this search reads {data.dataset}; "
                          f"distill from a teacher of the same dataset")
    if teacher.permute_task != data.permute_task:
        raise RecipeError(f"{where} was trained on permute_task={teacher.permute_task} but this search reads "
                          f"permute_task={data.permute_task}; distill from a teacher of the same task")
    if teacher.shape is not None and list(teacher.shape) != list(splits.info.shape):
        raise RecipeError(f"{where} takes inputs {list(teacher.shape)} but this search's images are "
                          f"{list(splits.info.shape)}")
    if not splits.train.indexed:
        splits.train.indexed_batches()  # raises: the loader cannot name its samples


@torch.no_grad()
def teacher_logits(model: nn.Module, train: Loader, batch_size: int, device: torch.device) -> torch.Tensor:
    """float32 [N, K] logits of every training sample in storage order (un-augmented), on ``device``;
    the teacher's forward in float32, in batches of ``batch_size``."""
    model = model.to(device).eval()
    parts = []
    with torch.autocast(device.type, enabled=False):
        for lo in range(0, train.num_samples, batch_size):
            parts.append(model(train.rows(lo, min(lo + batch_size, train.num_samples))).float())
    return torch.cat(parts)


@dataclass
class Distiller:
    """The cached teacher logits [N, K] of a search's training split and the loss that uses them."""

    logits: torch.Tensor
    temperature: float
    weight: float
    source: str  # search.distill_teacher as recorded
    sha256: str  # of the teacher file

    def loss(self, student: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """``distill_loss`` of a batch whose rows are training samples ``idx`` [B]."""
        return distill_loss(student, self.logits.index_select(0, idx), y, self.temperature, self.weight,
                            label_smoothing)

    def record(self) -> dict[str, str]:
        """What last.pt and summary.json record of the teacher."""
        return {"teacher": self.source, "sha256": self.sha256}

    def check_resumed(self, saved: dict[str, Any] | None) -> None:
        """RunError (one line) when the checkpoint was distilled from another teacher file."""
        if not saved or saved.get("sha256") != self.sha256:
            was = (saved or {}).get("sha256") or "none"
            raise RunError(f"search.distill_teacher {self.source} changed since this run started (sha256 "
                           f"{self.sha256[:12]}..., the checkpoint's {was[:12]}...); put the teacher back, or "
                           f"start over with {option('force')}")


def make_distiller(teacher: Teacher, temperature: float, weight: float, data: DataConfig, splits: Splits,
                   device: torch.device, source: str | None = None) -> Distiller:
    """The teacher's logits over ``splits.train``, checked to be of this dataset and class count."""
    _check_fits(teacher, data, splits)
    logits = teacher_logits(teacher.model, splits.train, data.eval_batch_size, device)
    if logits.dim() != 2 or logits.shape[1] != splits.info.num_classes:
        raise RecipeError(f"search.distill_teacher: {teacher.path} outputs {list(logits.shape[1:])} logits per "
                          f"image but this search has {splits.info.num_classes} classes; distill from a teacher "
                          f"of the same class count")
    if not bool(torch.isfinite(logits).all()):
        raise RunError(f"search.distill_teacher: {teacher.path} gives non-finite logits on the training images")
    return Distiller(logits, float(temperature), float(weight), str(source or teacher.path), teacher.sha256)


def build_distiller(cfg: SearchConfig, data: DataConfig, splits: Splits, device: torch.device,
                    load_artifact: ArtifactLoader | None = None) -> Distiller | None:
    """The recipe's distiller (None when ``search.distill_teacher`` is null)."""
    if cfg.distill_teacher is None:
        return None
    teacher = load_teacher(cfg.distill_teacher, load_artifact)
    return make_distiller(teacher, cfg.distill_temperature, cfg.distill_weight, data, splits, device,
                          cfg.distill_teacher)
