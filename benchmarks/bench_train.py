"""Training throughput (samples/s) of MEAN's spot and recognition phases, against plain eager PyTorch.

``ours``: :class:`meanspot_fused.training.loop.Trainer` (Keras semantics: Keras
Adam, MSE or clipped CCE + L2 on the conv kernels, float64 BatchNorm batch
statistics; recognition on the frozen trunk with batch-stat BN and dropout).
``plain``: the same float32 MeanSpot trained the usual PyTorch way:
``torch.optim.Adam(lr=5e-4, eps=1e-7)``, ``nn.MSELoss`` (spot) or CE on the
softmax output (recog), torch's BatchNorm, no L2, the trunk frozen and in
eval mode for recognition. Both: batch 32, reshuffled every epoch, random
inputs in [0, 1). Each phase runs ``--epochs`` epochs, ``--repeats`` times with
ours and plain interleaved; the fastest epoch counts (the first pays warm-up).
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import device_description, save_results  # noqa: E402
from meanspot_fused.network.reference import MeanSpot  # noqa: E402
from meanspot_fused.training.loop import Samples, TrainConfig, Trainer  # noqa: E402

BATCH = 32


def _data(n: int, classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.rand(n, 1, 42, 42, generator=g).to(device) for _ in range(3)]
    y_spot = (torch.rand(n, generator=g) < 0.17).float().to(device)
    y_recog = torch.eye(classes)[torch.randint(0, classes, (n,), generator=g)].to(device)
    return Samples(*maps, y_spot), Samples(*maps, y_recog)


def _ours(cbam: str, spot: Samples, recog: Samples, epochs: int, device: torch.device):
    reports = []
    trainer = Trainer(cbam, recog.y.shape[1], TrainConfig(spot_epochs=epochs, recog_epochs=epochs), device=device)
    trainer.train_fold(0, spot, recog, progress=reports.append)
    best = {}
    for r in reports:
        best[r.phase] = min(best.get(r.phase, float("inf")), r.seconds)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain_epochs(model, head, params, data: Samples, epochs: int, device: torch.device) -> float:
    opt = torch.optim.Adam(params, lr=5e-4, eps=1e-7)
    mse = torch.nn.MSELoss()
    n, best = data.u.shape[0], float("inf")
    for _ in range(epochs):
        _sync(device)
        t = time.perf_counter()
        order = torch.randperm(n, device=device)
        for lo in range(0, n, BATCH):
            idx = order[lo:lo + BATCH]
            opt.zero_grad(set_to_none=True)
            out = model(data.u[idx], data.v[idx], data.os[idx])
            out = dict(zip(model.head_names, out if isinstance(out, tuple) else (out,)))[head]
            if head == "spot":
                loss = mse(out[:, 0], data.y[idx])
            else:
                loss = -(data.y[idx] * out.clamp_min(1e-7).log()).sum(1).mean()
            loss.backward()
            opt.step()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def _plain(cbam: str, spot: Samples, recog: Samples, epochs: int, device: torch.device):
    model = MeanSpot(cbam=cbam, heads=("spot",)).to(device).train()
    best = {"spot": _plain_epochs(model, "spot", model.parameters(), spot, epochs, device)}
    both = MeanSpot(cbam=cbam, heads=("spot", "recog"), recog_classes=recog.y.shape[1]).to(device)
    for p in both.parameters():
        p.requires_grad_(False)
    head = list(both.heads["recog"].parameters())
    for p in head:
        p.requires_grad_(True)
    both.eval()
    both.heads["recog"].train()
    best["recog"] = _plain_epochs(both, "recog", head, recog, epochs, device)
    return best


def _markdown(rows, args, device: torch.device, command: str, date: str):
    setup = (f"{device_description(device)}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
             f"{args.samples} random samples, batch {BATCH}, fastest epoch of {args.repeats} interleaved runs of "
             f"{args.epochs} epochs; command: `{command}`")
    table = [f"| {r['cbam']} | {r['phase']} | {r['ours_samples_per_s']:,.0f} | {r['plain_samples_per_s']:,.0f} | "
             f"{r['ours_vs_plain']:.2f}x |" for r in rows]
    return [f"# Training throughput, spot and recognition phases ({device.type}, {date})", "", setup, "",
            "ours = meanspot_fused.training (Keras semantics); plain = torch.optim.Adam + nn.MSELoss / CE, "
            "torch BatchNorm, no L2, same float32 MeanSpot.", "",
            "| CBAM | phase | ours samples/s | plain samples/s | ours vs plain |", "|---|---|---|---|---|", *table]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1024, help="training samples per phase (default 1024)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per phase; the fastest counts (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of ours and plain (default 3)")
    ap.add_argument("--cbam", default="none,all", help="CBAM placements, comma list (default none,all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    spot, recog = _data(args.samples, 3, device)
    rows = []
    for cbam in args.cbam.split(","):
        ours, plain = {}, {}
        for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
            for best, run in ((ours, _ours), (plain, _plain)):
                for phase, seconds in run(cbam, spot, recog, args.epochs, device).items():
                    best[phase] = min(best.get(phase, float("inf")), seconds)
        for phase in ("spot", "recog"):
            rows.append(dict(cbam=cbam, phase=phase, ours_samples_per_s=args.samples / ours[phase],
                             plain_samples_per_s=args.samples / plain[phase], ours_vs_plain=plain[phase] / ours[phase]))
    command = " ".join(map(shlex.quote, sys.argv))
    date = datetime.datetime.now().isoformat(timespec="seconds")
    lines = _markdown(rows, args, device, command, date)
    text = "\n".join(lines) + "\n"
    print(text)
    save_results(args.out, "train_", device.type, dict(date=date, command=command, samples=args.samples,
                                                       batch=BATCH, epochs=args.epochs, repeats=args.repeats, rows=rows,
                                                       numpy=np.__version__), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
