"""Checkpoints are data, not programs: every checkpoint is read with
`torch.load(weights_only=True)`, which unpickles tensors, numbers, strings and containers only.
A file that pickles anything else (a class, a function such as `os.system`) is refused before any
of its code runs; this module turns torch's long advice (which suggests `weights_only=False`) into
one message that says what the file holds and how to save it safely instead."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def checkpoint_load_error(path: Path, err: BaseException) -> str:
    """The message for a checkpoint that `torch.load(weights_only=True)` did not read."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = _GLOBAL.search(text)
        what = f"the Python object {found.group(1)!r}" if found else "Python objects other than tensors"
        return (
            f"checkpoint {path} is refused: it pickles {what}, and loading that would run code from the "
            "file (torch.load(weights_only=True) reads only tensors, numbers, strings, lists and dicts). "
            "If the file is yours, re-save its weights: torch.save(model.state_dict(), path)."
        )
    first = " ".join(text.split())[:300]
    return (
        f"checkpoint {path} cannot be read with torch.load(weights_only=True): {type(err).__name__}: {first}. "
        "Save a state_dict (tensors, numbers, strings, lists, dicts)."
    )
