"""MEAN's training loop per LOSO fold: the spot phase, the recognition phase, the combined model.

Follows ``shared/design/TRAINING.md`` sections 6, 7 and 9a with the Keras
mechanics of :mod:`.keras_semantics`:

* spot phase (section 6): the model restored to the SAME initial weights at
  every fold, batch 32, 10 epochs, a new shuffle every epoch, the last partial
  batch kept, dropout active, MSE + L2, Keras Adam lr 5e-4; the final epoch's
  weights are kept;
* recognition phase (section 7): the trained trunk frozen (no gradient, BN on
  batch statistics with frozen moving statistics, dropout active, as MEAN's
  TF 2.4 graph runs it), a fresh Keras-initialised recog head, 100 epochs of
  clipped categorical cross-entropy + L2;
* optimizers (section 9a): by default one spot Adam serves every fold (moments
  and step counts carry over) and the recog Adam continues its step count on
  each fold's new head, as MEAN does; ``fresh_optimizer_per_fold=True`` fixes it.

Randomness (init, shuffles, dropout masks, recog head init) comes from the
seed alone: the model init from ``seed``, each fold's draws from
``(seed, fold)``. So a fold's result depends only on the seed, the fold
number, its data and the trainer state before it; with the same thread count
CPU runs are bitwise reproducible, and :meth:`Trainer.state_dict` after a fold
resumes to the bitwise-same later folds as an uninterrupted run.

Inputs: ``u``, ``v``, ``os`` of shape (N, 1, 42, 42) float32 in [0, 1] (numpy or
torch); ``y`` (N,) 0/1 labels for spotting, (N, C) one-hot for recognition.
"""
from __future__ import annotations

import io
import os
import pickle
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Dict, List, NamedTuple, Optional, Union

import numpy as np
import torch

from ..errors import FileError, InputError, InputTypeError
from ..io.atomic import replace_atomically
from ..network.reference import INPUT_SIZE, PLACEMENTS, MeanSpot
from ..predict import _device  # the one check of a --device value (cpu, cuda, cuda:N)
from .keras_semantics import ADAM_LR, KerasAdam, glorot_head_, keras_batchnorm, keras_init_, train_step

__all__ = ["Samples", "TrainConfig", "EpochReport", "FoldResult", "Trainer", "run_phase", "STATE_VERSION"]

#: Version of :meth:`Trainer.state_dict`'s layout.
STATE_VERSION = 1


class Samples(NamedTuple):
    """Training samples: three (N, 1, 42, 42) maps and the labels ((N,) spot, (N, C) one-hot recog)."""

    u: object
    v: object
    os: object
    y: object


@dataclass(frozen=True)
class TrainConfig:
    """MEAN's training settings (TRAINING.md 6, 7); defaults are MEAN's.

    ``fresh_optimizer_per_fold``: the fix of TRAINING.md 9a (a new Adam per fold
    and phase); the default ``False`` reproduces MEAN's shared optimizers.
    """

    spot_epochs: int = 10
    recog_epochs: int = 100
    batch_size: int = 32
    lr: float = ADAM_LR
    fresh_optimizer_per_fold: bool = False
    seed: int = 0

    def __post_init__(self):
        for name in ("spot_epochs", "recog_epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "batch_size" else 0):
                raise InputError(f"{name} must be an integer >= {1 if name == 'batch_size' else 0}, got {value!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise InputError(f"lr must be a number > 0, got {self.lr!r}")
        if not isinstance(self.fresh_optimizer_per_fold, bool):
            raise InputTypeError(f"fresh_optimizer_per_fold must be a bool, got {self.fresh_optimizer_per_fold!r}")


@dataclass(frozen=True)
class EpochReport:
    """What the progress callback gets after every epoch."""

    fold: int
    phase: str  # "spot" or "recog"
    epoch: int  # 1-based
    epochs: int
    loss: float  # mean over the epoch's samples of the batch losses (MSE or CCE, + L2), as Keras logs it
    seconds: float


@dataclass
class FoldResult:
    """A trained fold: the model (eval mode; heads spot, or spot and recog) and its per-epoch reports."""

    fold: int
    model: MeanSpot
    history: List[EpochReport]


Progress = Optional[Callable[[EpochReport], None]]


def _tensor(x, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name} must be a numpy array or torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        x = x.float()
    return x.to(device=device, dtype=torch.float32)


def _samples(data: Samples, what: str, device: torch.device, classes: Optional[int]) -> Samples:
    """Check and move one phase's samples to ``device`` (float32)."""
    if not isinstance(data, tuple) or len(data) != 4:
        raise InputTypeError(f"{what} must be Samples(u, v, os, y), got {type(data).__name__}")
    maps = []
    for name, x in zip(("u", "v", "os"), data[:3]):
        t = _tensor(x, f"{what}.{name}", device)
        if t.dim() != 4 or tuple(t.shape[1:]) != (1, INPUT_SIZE, INPUT_SIZE):
            raise InputError(f"{what}.{name} must have shape (N, 1, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(t.shape)}")
        maps.append(t)
    n = maps[0].shape[0]
    if n == 0 or any(t.shape[0] != n for t in maps):
        raise InputError(f"{what}.u, .v and .os must hold the same number (> 0) of samples, got "
                         f"{[t.shape[0] for t in maps]}")
    y = _tensor(data[3], f"{what}.y", device)
    if classes is None:
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if tuple(y.shape) != (n,):
            raise InputError(f"{what}.y must have shape ({n},) (0/1 spotting labels), got {tuple(y.shape)}")
    elif tuple(y.shape) != (n, classes):
        raise InputError(f"{what}.y must have shape ({n}, {classes}) (one-hot over {classes} classes), "
                         f"got {tuple(y.shape)}")
    return Samples(*maps, y)


def run_phase(model: MeanSpot, head: str, optimizer: torch.optim.Optimizer, data: Samples, epochs: int,
              batch_size: int, generator: torch.Generator, fold: int = 0, progress: Progress = None
              ) -> List[EpochReport]:
    """Keras ``fit(shuffle=True)`` of one head: ``epochs`` passes over ``data`` in shuffled batches.

    The model must already be in the mode to train in (and its BatchNorms in
    :func:`keras_batchnorm`); ``data`` on the model's device. Each epoch draws
    a permutation from ``generator`` (on the CPU) and keeps the last partial batch.
    """
    n = data.u.shape[0]
    history = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(data.u.device)
        total = 0.0
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            parts = train_step(model, optimizer, data.u[idx], data.v[idx], data.os[idx], data.y[idx], head)
            total += float(parts["loss"]) * idx.numel()
        report = EpochReport(fold, head, epoch + 1, epochs, total / n, time.perf_counter() - start)
        history.append(report)
        if progress is not None:
            progress(report)
    return history


def _fold_seed(seed: int, fold: int) -> int:
    # Well-mixed and independent of how many folds ran before in this process.
    return int(np.random.SeedSequence([seed, fold]).generate_state(1, dtype=np.uint64)[0] & ((1 << 63) - 1))


class Trainer:
    """MEAN's training across LOSO folds, with the state to checkpoint and resume between folds.

    Args:
        cbam: CBAM placement (``"none"`` is MEAN's network).
        recog_classes: classes of the recognition head (3 for CAS(ME)^2, SAMM-LV, SMIC; 5 for CASME II).
        config: :class:`TrainConfig` (MEAN's settings by default).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Call :meth:`train_fold` once per fold. :meth:`state_dict` /
    :meth:`save_state` between folds, and :meth:`from_state` in a new process,
    continue to the bitwise-same later folds (CPU, same thread count).
    """

    def __init__(self, cbam: str = "none", recog_classes: int = 3, config: Optional[TrainConfig] = None,
                 device: Union[str, torch.device] = "cpu"):
        if cbam not in PLACEMENTS:
            raise InputError(f"cbam must be one of {PLACEMENTS}, got {cbam!r}")
        if not isinstance(recog_classes, int) or recog_classes < 2:
            raise InputError(f"recog_classes must be an integer >= 2, got {recog_classes!r}")
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise InputTypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.cbam = cbam
        self.recog_classes = recog_classes
        self.config = config
        self.device = _device(str(device))
        # MEAN builds model_spot once and saves its initial weights (T:27-28); every fold restores them.
        self.spot_model = keras_init_(MeanSpot(cbam=cbam, heads=("spot",)),
                                      torch.Generator().manual_seed(config.seed)).to(self.device)
        self.initial_state = {k: v.detach().clone() for k, v in self.spot_model.state_dict().items()}
        self.spot_optimizer = KerasAdam(self.spot_model.parameters(), lr=config.lr)
        # adam_recog's iteration count: each fold's new head continues it (TRAINING.md 9a).
        self.recog_iterations = 0
        self.folds_done: List[int] = []

    # ------------------------------------------------------------------------------------------
    def train_fold(self, fold: int, spot: Samples, recog: Optional[Samples] = None, progress: Progress = None
                   ) -> FoldResult:
        """Train fold ``fold`` (an integer naming it, e.g. the held-out subject's position).

        ``spot``: the fold's spotting training samples (labels (N,) 0/1);
        ``recog``: its recognition samples (one-hot (N, recog_classes)), or
        None to skip the recognition phase. Returns the trained model: heads
        ``("spot", "recog")`` sharing the trunk (MEAN's combined model, never
        trained jointly), or ``("spot",)`` without ``recog``; eval mode.
        """
        if not isinstance(fold, int) or isinstance(fold, bool) or fold < 0:
            raise InputError(f"fold must be an integer >= 0, got {fold!r}")
        spot = _samples(spot, "spot", self.device, None)
        if recog is not None:
            recog = _samples(recog, "recog", self.device, self.recog_classes)
        cfg = self.config
        gen = torch.Generator().manual_seed(_fold_seed(cfg.seed, fold))
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        # Dropout draws from torch's global generator: seed it for this fold without disturbing the caller's.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=gen)))
            history = self._spot_phase(fold, spot, gen, progress)
            model = self._combined(gen) if recog is not None else self._copy_spot()
            if recog is not None:
                history += self._recog_phase(fold, model, recog, gen, progress)
        self.folds_done.append(fold)
        return FoldResult(fold, model.eval(), history)

    def _spot_phase(self, fold: int, data: Samples, gen: torch.Generator, progress: Progress) -> List[EpochReport]:
        model = self.spot_model
        model.load_state_dict(self.initial_state)  # set_weights: BN moving statistics included
        if self.config.fresh_optimizer_per_fold:
            self.spot_optimizer = KerasAdam(model.parameters(), lr=self.config.lr)
        model.train()
        with keras_batchnorm(model):
            return run_phase(model, "spot", self.spot_optimizer, data, self.config.spot_epochs,
                             self.config.batch_size, gen, fold, progress)

    def _copy_spot(self) -> MeanSpot:
        model = MeanSpot(**self.spot_model.config()).to(self.device)
        model.load_state_dict(self.spot_model.state_dict())
        return model

    def _combined(self, gen: torch.Generator) -> MeanSpot:
        """The spot model's trunk and spot head plus a fresh Keras-initialised recog head."""
        model = MeanSpot(cbam=self.cbam, heads=("spot", "recog"), recog_classes=self.recog_classes).to(self.device)
        state = model.state_dict()
        state.update(self.spot_model.state_dict())
        model.load_state_dict(state)
        glorot_head_(model, "recog", gen)
        return model

    def _recog_phase(self, fold: int, model: MeanSpot, data: Samples, gen: torch.Generator,
                     progress: Progress) -> List[EpochReport]:
        head = model.heads["recog"]
        trainable = set(head.parameters())
        for p in model.parameters():
            p.requires_grad_(p in trainable)
        start = 0 if self.config.fresh_optimizer_per_fold else self.recog_iterations
        optimizer = KerasAdam(head.parameters(), lr=self.config.lr, initial_step=start)
        # TF 2.4 runs the frozen trunk with training=True: batch-statistic BN and active dropout, but
        # frozen layers do not update their moving statistics (TRAINING.md 7): momentum 0.
        bns = [m for m in model.branches.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        momenta = [bn.momentum for bn in bns]
        model.train()
        for bn in bns:
            bn.momentum = 0.0
        try:
            with keras_batchnorm(model):
                history = run_phase(model, "recog", optimizer, data, self.config.recog_epochs,
                                    self.config.batch_size, gen, fold, progress)
        finally:
            for bn, m in zip(bns, momenta):
                bn.momentum = m
            for p in model.parameters():
                p.requires_grad_(True)
        if not self.config.fresh_optimizer_per_fold:
            self.recog_iterations = optimizer.iterations
        return history

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, object]:
        """Everything later folds depend on: settings, initial weights, optimizer states with step counts."""
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        opt = self.spot_optimizer.state_dict()
        opt_state = {i: {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                     for i, s in opt["state"].items()}
        return {
            "version": STATE_VERSION,
            "cbam": self.cbam,
            "recog_classes": self.recog_classes,
            "config": asdict(self.config),
            "initial_state": cpu(self.initial_state),
            "spot_optimizer": {"state": opt_state, "param_groups": opt["param_groups"]},
            "recog_iterations": self.recog_iterations,
            "folds_done": list(self.folds_done),
        }

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore :meth:`state_dict` (of a trainer with the same cbam and recog_classes)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise FileError(f"trainer state must be a dict of version {STATE_VERSION}, got "
                            f"{state.get('version') if isinstance(state, dict) else type(state).__name__}")
        if (state["cbam"], state["recog_classes"]) != (self.cbam, self.recog_classes):
            raise InputError(f"trainer state is for cbam={state['cbam']!r}, recog_classes={state['recog_classes']}; "
                             f"this trainer has cbam={self.cbam!r}, recog_classes={self.recog_classes}")
        self.config = TrainConfig(**state["config"])
        self.initial_state = {k: v.to(self.device) for k, v in state["initial_state"].items()}
        self.spot_model.load_state_dict(self.initial_state)
        self.spot_optimizer = KerasAdam(self.spot_model.parameters(), lr=self.config.lr)
        self.spot_optimizer.load_state_dict(state["spot_optimizer"])  # moves the moments to the params' device
        self.recog_iterations = int(state["recog_iterations"])
        self.folds_done = [int(f) for f in state["folds_done"]]

    def save_state(self, path: Union[str, os.PathLike, io.IOBase]) -> None:
        """Write :meth:`state_dict` with ``torch.save``: atomically to a path, or into a binary file object."""
        if isinstance(path, io.IOBase):
            torch.save(self.state_dict(), path)
            return
        state = self.state_dict()
        replace_atomically(os.fspath(path), lambda tmp: torch.save(state, tmp))

    @classmethod
    def from_state(cls, source: Union[str, os.PathLike, io.IOBase, bytes],
                   device: Union[str, torch.device] = "cpu") -> "Trainer":
        """A trainer restored from :meth:`save_state`'s file (a path, a binary file object or its bytes)."""
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        try:
            state = torch.load(source if isinstance(source, io.IOBase) else os.fspath(source), map_location="cpu",
                               weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise FileError(f"cannot read the trainer state {source!r}: {e}") from e
        if not isinstance(state, dict) or "cbam" not in state or "config" not in state:
            raise FileError(f"{source!r} is not a trainer state (no cbam/config)")
        known = {f.name for f in fields(TrainConfig)}
        trainer = cls(state["cbam"], state["recog_classes"],
                      TrainConfig(**{k: v for k, v in state["config"].items() if k in known}), device)
        trainer.load_state_dict(state)
        return trainer
