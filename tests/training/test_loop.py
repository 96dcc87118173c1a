"""The training loop: MEAN's spot and recognition phases, determinism, resumable state (TRAINING.md 6, 7, 9a)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from meanspot_fused.errors import DeviceError, FileError, InputError
from meanspot_fused.training.loop import Samples, TrainConfig, Trainer

# Tiny folds: 40 spot samples (a full batch of 32 and a partial one of 8), 10 recog samples.
N_SPOT, N_RECOG, CLASSES = 40, 10, 3
SMALL = dict(spot_epochs=2, recog_epochs=3)


@pytest.fixture(autouse=True)
def one_thread():
    # Bitwise reproducibility holds for one thread count; the machine is shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(seed, n_spot=N_SPOT, n_recog=N_RECOG):
    rng = np.random.default_rng(seed)
    maps = lambda n: [rng.random((n, 1, 42, 42), dtype=np.float32) for _ in range(3)]  # noqa: E731
    y = np.zeros(n_spot, np.float32)
    y[:7] = 1
    spot = Samples(*maps(n_spot), y)
    recog = Samples(*maps(n_recog), np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, n_recog)])
    return spot, recog


def _equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _trainer(cbam="none", **cfg):
    return Trainer(cbam, CLASSES, TrainConfig(**{**SMALL, **cfg}))


def test_fold_model_has_both_heads_and_frozen_trunk_is_unchanged_by_recognition():
    trainer = _trainer()
    spot, recog = _data(0)
    result = trainer.train_fold(0, spot, recog)
    model = result.model
    assert model.head_names == ("spot", "recog") and not model.training
    trained_spot = trainer.spot_model.state_dict()  # the spot model after the spot phase
    for k, v in model.state_dict().items():
        if not k.startswith("heads.recog."):
            # The trunk (BN moving statistics included) and the spot head come from the spot phase, untouched.
            assert torch.equal(v, trained_spot[k]), k
    assert all(p.requires_grad for p in model.parameters())
    assert [(r.phase, r.epoch) for r in result.history] == [("spot", 1), ("spot", 2), ("recog", 1), ("recog", 2),
                                                            ("recog", 3)]
    # The spot phase moved the weights and the BN statistics away from the shared init.
    assert not torch.equal(trained_spot["branches.u.conv.weight"], trainer.initial_state["branches.u.conv.weight"])
    assert not torch.equal(trained_spot["branches.u.bn.running_mean"], trainer.initial_state["branches.u.bn.running_mean"])


def test_batches_keep_the_last_partial_one_and_progress_reports_each_epoch():
    trainer = _trainer()
    spot, recog = _data(0)
    reports = []
    trainer.train_fold(3, spot, recog, progress=reports.append)
    assert trainer.spot_optimizer.iterations == SMALL["spot_epochs"] * 2  # ceil(40 / 32) batches per epoch
    assert trainer.recog_iterations == SMALL["recog_epochs"] * 1
    assert len(reports) == 5 and all(r.fold == 3 and r.seconds >= 0 and np.isfinite(r.loss) for r in reports)
    assert reports[0].epochs == 2 and reports[-1].epochs == 3


def test_same_seed_is_bitwise_reproducible_and_another_seed_is_not():
    spot, recog = _data(1)
    a = _trainer(seed=5).train_fold(0, spot, recog).model
    b = _trainer(seed=5).train_fold(0, spot, recog).model
    c = _trainer(seed=6).train_fold(0, spot, recog).model
    assert _equal(a, b)
    assert not _equal(a, c)


def test_every_fold_starts_from_the_same_init():
    """With fresh optimizers, the same fold trained twice is the same; MEAN's shared Adam makes it differ (9a)."""
    spot, _ = _data(2)
    fixed = _trainer(fresh_optimizer_per_fold=True)
    first = fixed.train_fold(0, spot).model
    second = fixed.train_fold(0, spot).model
    assert first.head_names == ("spot",) and _equal(first, second)
    mean = _trainer()
    first = mean.train_fold(0, spot).model
    second = mean.train_fold(0, spot).model
    assert not _equal(first, second)
    assert mean.spot_optimizer.iterations == 2 * 2 * SMALL["spot_epochs"]  # steps carried across folds


def test_recognition_optimizer_step_count_carries_over_by_default_and_not_with_the_fix():
    spot, recog = _data(3)
    mean, fixed = _trainer(), _trainer(fresh_optimizer_per_fold=True)
    for trainer in (mean, fixed):
        for fold in (0, 1):
            trainer.train_fold(fold, spot, recog)
    assert mean.recog_iterations == 2 * SMALL["recog_epochs"]
    assert fixed.recog_iterations == 0


@pytest.mark.parametrize("fresh", [False, True])
def test_resumed_run_equals_uninterrupted_run(tmp_path, fresh):
    folds = [_data(10), _data(11)]
    straight = _trainer(cbam="all", fresh_optimizer_per_fold=fresh)
    want = [straight.train_fold(i, *d).model for i, d in enumerate(folds)]

    first = _trainer(cbam="all", fresh_optimizer_per_fold=fresh)
    assert _equal(first.train_fold(0, *folds[0]).model, want[0])
    buf = io.BytesIO()
    first.save_state(buf)
    first.save_state(tmp_path / "state.pt")
    del first
    for source in (buf.getvalue(), tmp_path / "state.pt"):
        resumed = Trainer.from_state(source)
        assert resumed.folds_done == [0] and resumed.config.fresh_optimizer_per_fold == fresh
        assert _equal(resumed.train_fold(1, *folds[1]).model, want[1])


def test_bad_inputs_are_named():
    spot, recog = _data(0)
    trainer = _trainer()
    with pytest.raises(InputError, match=r"spot\.v must have shape"):
        trainer.train_fold(0, Samples(spot.u, spot.v[:, :, :40], spot.os, spot.y))
    with pytest.raises(InputError, match=r"recog\.y must have shape \(10, 3\)"):
        trainer.train_fold(0, spot, Samples(*recog[:3], recog.y[:, :2]))
    with pytest.raises(InputError, match=r"spot\.y must have shape"):
        trainer.train_fold(0, Samples(*spot[:3], spot.y[:5]))
    with pytest.raises(InputError, match="fold"):
        trainer.train_fold(-1, spot)
    with pytest.raises(InputError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(InputError, match="cbam"):
        Trainer("everywhere")
    with pytest.raises(FileError):
        Trainer.from_state(b"not a state")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            Trainer(device="cuda")


def test_modes_during_each_phase():
    """Spot phase: everything in training mode. Recognition: trunk BN on batch statistics with frozen moving
    statistics (momentum 0), trunk and head dropout active, only the recog head has gradients (TRAINING.md 7)."""
    spot, recog = _data(4)
    trainer = _trainer()
    seen = []

    def hook(module, args, out):
        grad = [p.requires_grad for p in module.parameters()]
        seen.append((phase[0], type(module).__name__, module.training, getattr(module, "momentum", None), grad))

    phase = ["spot"]
    for m in trainer.spot_model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.BatchNorm2d)):
            m.register_forward_hook(hook)
    combined = trainer._combined

    def combined_with_hooks(gen):
        model = combined(gen)
        phase[0] = "recog"
        for m in model.modules():
            if isinstance(m, (torch.nn.Dropout, torch.nn.BatchNorm2d, torch.nn.Conv2d)):
                m.register_forward_hook(hook)
        return model

    trainer._combined = combined_with_hooks
    trainer.train_fold(0, spot, recog)
    spot_seen = [s for s in seen if s[0] == "spot"]
    recog_seen = [s for s in seen if s[0] == "recog"]
    assert spot_seen and all(training for _, _, training, _, _ in spot_seen)
    assert all(m == 0.01 for _, kind, _, m, _ in spot_seen if kind.endswith("BatchNorm2d"))
    bns = [s for s in recog_seen if s[1].endswith("BatchNorm2d")]
    drops = [s for s in recog_seen if s[1] == "Dropout"]
    assert bns and all(training and m == 0.0 and not any(g) for _, _, training, m, g in bns)
    # Per batch: the three branch dropouts (0.3) and the recog head's (0.2), all in training mode.
    assert len(drops) == 4 * SMALL["recog_epochs"] and all(training for _, _, training, _, _ in drops)
    convs = [s for s in recog_seen if s[1] == "Conv2d"]
    assert sorted({any(g) for *_, g in convs}) == [False, True]  # trunk convs frozen, the recog head conv not


def test_training_learns_a_learnable_signal():
    """Spot label = bright u map: the epoch loss (MSE + L2) falls."""
    rng = np.random.default_rng(5)
    n = 96
    y = (rng.random(n) < 0.3).astype(np.float32)
    u = rng.random((n, 1, 42, 42), dtype=np.float32) * 0.5 + 0.5 * y[:, None, None, None]
    spot = Samples(u, *[rng.random((n, 1, 42, 42), dtype=np.float32) for _ in range(2)], y)
    reports = []
    _trainer(spot_epochs=6, fresh_optimizer_per_fold=True).train_fold(0, spot, progress=reports.append)
    losses = [r.loss for r in reports]
    # Margin: a fall to under 60% of the first epoch's loss (measured: 25.8 -> 5.5, a fifth).
    assert losses[-1] < 0.6 * losses[0], losses
