"""What the lower layers need to know about releases: whether training is forbidden in this process.

A run on a release (`fexbench run --release ...`, fexbench.harness.release) scores explainers on the
subjects and resources the release ships; it must never train one itself, since CPU training is not
bit-identical across machines and a locally trained stand-in would silently change the board. The
switch is an environment variable, so a helper process (the prefetcher, a local Ray worker) started
after it is set inherits it. Its value is the reason, quoted in the error.
"""
from __future__ import annotations

import os

from fexbench.core.errors import UsageError

TRAINING_ENV = "FEXBENCH_NO_TRAINING"


class ReleaseError(UsageError):
    """A release that cannot be used (bad manifest, a file that fails its hash, a version that does
    not match); the message names the file or field. Printed as one line, exit status 2."""


class TrainingForbidden(ReleaseError):
    """Something would be trained, and this run forbids training (a release run, or [run] train = false)."""


def training_forbidden() -> str | None:
    """Why training is forbidden in this process, or None when it is allowed."""
    reason = os.environ.get(TRAINING_ENV, "")
    return None if reason in ("", "0") else reason


def forbid_training(reason: str) -> None:
    os.environ[TRAINING_ENV] = reason or "forbidden"


def allow_training() -> None:
    os.environ.pop(TRAINING_ENV, None)


def refuse_training(what: str) -> None:
    """Raise TrainingForbidden naming `what` when training is forbidden; else nothing."""
    reason = training_forbidden()
    if reason is not None:
        raise TrainingForbidden(f"{what} is not in the cache and training is forbidden ({reason}); "
                                f"a run on a release trains nothing: the release lacks it")
