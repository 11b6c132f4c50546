"""Estimates kept on disk between runs, so that planning again answers in seconds.

Why: an estimate is a pure function of what is asked (architecture, size, checkpointing, micro-batch),
of the meter's settings (class count, precision, device model, card) and of the code that computes it
(planner, torch, timm, fastai). A user who plans again for another card, effective batch or margin,
or adds a model to a models file, asks mostly for answers already computed.

What: one small JSON file per answer under ``$XDG_CACHE_HOME/planner/estimates`` (default
``~/.cache/planner/estimates``), named by the sha256 of everything the answer depends on: the
question, the meter's settings, the installed torch, timm and fastai, and a digest of planner's own
source files (any change to planner's code starts afresh). A file is written atomically; an
unreadable one is a miss; a folder that cannot be written only costs the saving.
``PLANNER_NO_CACHE=1`` turns the store off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import planner
from planner.base.atomic import atomic_write_json
from planner.base.compat import installed_version
from planner.base.locations import cache_folder

NO_CACHE_VARIABLE = "PLANNER_NO_CACHE"
Answer = TypeVar("Answer")


@cache
def planner_code_digest() -> str:
    """sha256 over planner's own source files (their paths and contents)."""
    root = Path(planner.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class EstimateStore:
    """Answers of one meter's settings, on disk; see the module docstring.

    Args:
        settings: everything besides the question that an answer depends on (JSON-able; ``repr`` of
            the meter's dataclasses is fine), combined with the code's versions.
        folder: where the files go; None: the user's cache folder.
    """

    def __init__(self, settings: dict[str, Any], folder: Path | None = None):
        self.folder = folder or cache_folder("estimates")
        everything = {**settings, "planner_code": planner_code_digest(),
                      **{name: installed_version(name) for name in ("torch", "timm", "fastai")}}
        self._settings_text = json.dumps(everything, sort_keys=True, default=repr)  # once, not per answer

    @staticmethod
    def enabled() -> bool:
        return os.environ.get(NO_CACHE_VARIABLE, "").strip() not in ("1", "true", "yes")

    def _path(self, kind: str, question: dict[str, Any]) -> Path:
        text = json.dumps({"kind": kind, "question": question}, sort_keys=True) + self._settings_text
        name = hashlib.sha256(text.encode()).hexdigest()
        return self.folder / name[:2] / f"{name}.json"

    def get(self, kind: str, question: dict[str, Any], read: Callable[[dict[str, Any]], Answer]) -> Answer | None:
        """The stored answer as ``read`` makes it from the file's JSON object, or None: none stored, or the
        file is unreadable, or ``read`` refuses what it holds (a damaged or foreign file is a miss, never an error)."""
        try:
            answer = json.loads(self._path(kind, question).read_text(encoding="utf-8"))
            return read(answer) if isinstance(answer, dict) else None
        except (OSError, ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
            return None

    def put(self, kind: str, question: dict[str, Any], answer: dict[str, Any]) -> None:
        """Keep ``answer``; a folder that cannot be written is skipped."""
        path = self._path(kind, question)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, answer)
        except OSError:
            pass
