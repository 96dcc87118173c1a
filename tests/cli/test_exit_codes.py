"""One error family and one exit-code table for every entry point (meanspot_fused.errors)."""
import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from meanspot_fused import cli, errors, ops
from meanspot_fused.errors import (ComputeError, DeviceError, FileError, InputError, InputTypeError, MeanspotError,
                                   MissingDependencyError)
from meanspot_fused.io.errors import KerasFormatError, PredictError

README = Path(__file__).resolve().parents[2] / "README.md"
SUBCOMMANDS = tuple(c.__name__.lstrip("_") for c in cli.COMMANDS)


def test_every_subcommand_is_covered():
    assert SUBCOMMANDS == ("spot", "features", "predict", "evaluate", "train")


def test_table_is_the_documented_one():
    assert errors.EXIT_CODES.keys() == {0, 1, 2, 3, 4, 130}
    # The README's table lists the same codes with the same meanings.
    text = README.read_text()
    for code, meaning in errors.EXIT_CODES.items():
        assert re.search(rf"\|\s*{code}\s*\|\s*{re.escape(meaning)}", text), f"README lacks exit code {code}"


@pytest.mark.parametrize("command", ("",) + SUBCOMMANDS)
def test_every_help_ends_with_the_table(command, capsys):
    argv = ([command] if command else []) + ["--help"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for code, meaning in errors.EXIT_CODES.items():
        assert re.search(rf"^\s*{code}\s+{re.escape(meaning)}$", out, re.M), (command, code)


@pytest.mark.parametrize("cls,base,code", [
    (InputError, ValueError, 2), (InputTypeError, TypeError, 2), (FileError, ValueError, 2),
    (MissingDependencyError, ImportError, 3), (DeviceError, RuntimeError, 4), (ComputeError, RuntimeError, 1),
    (KerasFormatError, ValueError, 2), (PredictError, ValueError, 2),
])
def test_kinds_of_the_family(cls, base, code):
    assert issubclass(cls, MeanspotError) and issubclass(cls, base) and cls.exit_code == code


@pytest.mark.parametrize("raised,code", [
    (InputError("--k must be >= 1, got 0"), 2), (FileError("--model 'x.h5': not a Keras file"), 2),
    (MissingDependencyError("spot needs dlib: pip install '.[faces]'"), 3), (DeviceError("no GPU"), 4),
    (ComputeError("nan everywhere"), 1), (KeyboardInterrupt(), 130), (ImportError("no module named cv2"), 3),
    (RuntimeError("a kernel failed"), 1),
])
def test_main_maps_errors_to_the_table(raised, code, monkeypatch, capsys):
    # The same mapping whatever the subcommand: every one runs through cli._run.
    def run(args):
        raise raised
    for command in SUBCOMMANDS:
        parser = cli.build_parser()
        monkeypatch.setattr(cli, "build_parser", lambda p=parser: p)
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", lambda self, argv=None: argparse.Namespace(
            command=command, run=run))
        assert cli.main([command]) == code
        err = capsys.readouterr().err
        assert err.startswith(f"{cli.PROG} {command}: ")
        if not isinstance(raised, KeyboardInterrupt):
            assert str(raised) in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_absent_device_exits_4(tmp_path, capsys):
    frames = np.zeros((5, 32, 32), np.uint8)
    np.save(tmp_path / "f.npy", frames)
    np.save(tmp_path / "lm.npy", np.zeros((68, 2)))
    code = cli.main(["features", "--frames", str(tmp_path / "f.npy"), "--landmarks", str(tmp_path / "lm.npy"),
                     "--k", "1", "--output", str(tmp_path / "o.npz"), "--device", "cuda"])
    assert code == 4 and "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def test_op_wrappers_raise_the_family():
    with pytest.raises(InputError, match="x must be a 4-D tensor"):
        ops.channel_pool(torch.rand(3, 4))
    with pytest.raises(InputTypeError):
        ops.channel_pool([1, 2, 3])
    with pytest.raises(InputError, match="prev"):
        ops.tvl1_flow(np.zeros((2, 20, 20), np.uint8), np.zeros((3, 20, 20), np.uint8))
