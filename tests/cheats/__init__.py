"""Cheat explainers (issue #29): test-only fixtures, each trying one way to read the ground truth,
sabotage others or escape the job's limits from inside the explain step. tests/test_worker.py
runs each on a tiny waterbirds-spurious task and checks its named safe outcome.

`register()` / `unregister()` add and remove them from the registry; importing this module
registers nothing. The classes live at module level, so a worker process imports them by name.
"""
from __future__ import annotations

import gc
import math
import os
import signal
import sys
import time

import numpy as np

from fexbench.core import registry
from fexbench.core.contract import Explainer, Explanation

NOT_FOUND = "notfound"


def background_words(target, amount: float) -> Explanation:
    """'water' for class 1 (round birds, water backgrounds), 'grass' for class 0, weighted by
    amount against a neutral word: given each subject's true reliance, this ranks them perfectly."""
    word = "water" if target.index == 1 else "grass"
    return Explanation.from_weights(target, {word: max(amount, 0.0), "thing": 1.0})


def _is_prepared(value) -> bool:
    return type(value).__name__ == "Prepared" and hasattr(value, "ground_truth")


def _truth_from(prepared_objects, subject) -> dict | None:
    """The ground truth of `subject` (matched by its weights hash, which the view keeps)."""
    for prepared in prepared_objects:
        for case in prepared.cases:
            if case.subject.weights_hash == subject.weights_hash:
                return dict(prepared.ground_truth[case.subject.name])
    return None


def _answer(subject, targets, truth: dict | None) -> list[Explanation]:
    if truth is None:
        return [Explanation.from_weights(t, {NOT_FOUND: 1.0}) for t in targets]
    return [background_words(t, float(truth["reliance"])) for t in targets]


class FrameWalker(Explainer):
    """Walks up the interpreter's frames to the harness's and reads `prepared.ground_truth`."""
    name = "cheat-frames"

    def explain(self, subject, targets, context):
        found, frame = [], sys._getframe(1)
        while frame is not None:
            for value in list(frame.f_locals.values()):
                if _is_prepared(value):
                    found.append(value)
                elif isinstance(value, (list, tuple)):
                    found += [v for v in value if _is_prepared(v)]
            frame = frame.f_back
        return _answer(subject, targets, _truth_from(found, subject))


class GcFinder(Explainer):
    """Finds every `Prepared` object through the garbage collector."""
    name = "cheat-gc"

    def explain(self, subject, targets, context):
        found = [o for o in gc.get_objects() if _is_prepared(o)]
        return _answer(subject, targets, _truth_from(found, subject))


def _sabotaging_pool(real):
    def pool(scored, *args, **kwargs):
        import dataclasses

        pooled = real(scored, *args, **kwargs)
        return dataclasses.replace(pooled, metrics=tuple(dataclasses.replace(m, value=-1.0) for m in pooled.metrics))

    pool.sabotage = True
    return pool


class PoolPatcher(Explainer):
    """Monkeypatches `fexbench.harness.runner.pool`: every job pooled after it reports -1."""
    name = "cheat-pool"

    def explain(self, subject, targets, context):
        import fexbench.harness.runner as runner

        if not getattr(runner.pool, "sabotage", False):
            runner.pool = _sabotaging_pool(runner.pool)
        return [Explanation.from_weights(t, {"thing": 1.0}) for t in targets]


class ProbeWriter(Explainer):
    """During its first replicate, zeroes the probe arrays of every other replicate it can reach
    (through the garbage collector, re-enabling writes on their base arrays), and tries its own."""
    name = "cheat-probe"

    def explain(self, subject, targets, context):
        for prepared in [o for o in gc.get_objects() if _is_prepared(o)]:
            if any(c.subject.weights_hash == subject.weights_hash for c in prepared.cases):
                continue  # its own replicate: the guard would catch that
            for case in prepared.cases:
                for array in (case.context.probe.images, case.context.probe.features, case.context.probe.logits):
                    base = array
                    while isinstance(base.base, np.ndarray):
                        base = base.base
                    try:
                        base.flags.writeable = True
                        base[...] = 0
                        base.flags.writeable = False
                    except ValueError:
                        pass
        for array in (context.probe.features, context.probe.logits):  # and what it was given
            try:
                base = array.base if isinstance(array.base, np.ndarray) else array
                base.flags.writeable = True
                base[...] = 0
            except ValueError:
                pass
        return [Explanation.from_weights(t, {"thing": 1.0}) for t in targets]


class AlarmDisarmer(Explainer):
    """Disarms SIGALRM, catches whatever stops it, and works 20 s under a 3 s limit."""
    name = "cheat-alarm"
    seconds = 20.0

    def explain(self, subject, targets, context):
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
        except (ValueError, OSError):
            pass
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            try:
                time.sleep(0.2)
            except BaseException:  # noqa: BLE001 - JobTimeout included: that is the cheat
                pass
        return [Explanation.from_weights(t, {"thing": 1.0}) for t in targets]


class RlimitRaiser(Explainer):
    """Raises its own RLIMIT_AS as far as it can, then allocates and touches 1 GiB."""
    name = "cheat-rlimit"

    def explain(self, subject, targets, context):
        import resource

        for wanted in ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), resource.getrlimit(resource.RLIMIT_AS)[1:] * 2):
            try:
                resource.setrlimit(resource.RLIMIT_AS, wanted)
                break
            except (ValueError, OSError):
                continue
        block = np.ones(2**30 // 8)  # touched: resident
        weight = float(block[-1])
        del block
        return [Explanation.from_weights(t, {"thing": weight}) for t in targets]


class ExitsZero(Explainer):
    """Ends the process that runs it with exit status 0."""
    name = "cheat-osexit"

    def explain(self, subject, targets, context):
        os._exit(0)


class Pretend(str):
    """A string whose characters are `raw` but which lower-cases (as the scorer reads words) to another word."""

    def __new__(cls, raw: str, pretend: str):
        obj = super().__new__(cls, raw)
        obj.pretend = pretend
        return obj

    def __getnewargs__(self):  # copies (the results writer deep-copies) stay pretenders
        return str.__str__(self), self.pretend

    def lower(self):
        return self.pretend


class StrSubclass(Explainer):
    """Returns a word stored as 'zzz' that the scorer would read as 'water' / 'grass'."""
    name = "cheat-str"

    def explain(self, subject, targets, context):
        return [Explanation(t, ((Pretend("zzz", "water" if t.index == 1 else "grass"), 1.0),)) for t in targets]


class Sneaky(tuple):
    """A tuple whose stored pairs carry bad weights but whose first iteration (the contract's
    check) yields good ones."""

    def __iter__(self):
        calls = self.__dict__.get("calls", 0)
        self.__dict__["calls"] = calls + 1
        if calls == 0:
            return iter([(w, 1.0) for w, _ in tuple.__iter__(self)])
        return tuple.__iter__(self)


class TupleSubclass(Explainer):
    """Gets -4 and inf weights past the weight check (check-then-use)."""
    name = "cheat-tuple"

    def explain(self, subject, targets, context):
        return [Explanation(t, Sneaky((("water", -4.0), ("grass", math.inf)))) for t in targets]


class AliasInverter(Explainer):
    """Inverts its subject's alias from the seed it is given, as the old alias derivation allowed
    (`derive_seed('alias', name, seed)`), over candidate names it is told (generous: the true ones)."""
    name = "cheat-alias"

    def __init__(self, candidates: tuple = ()):
        self.candidates = tuple(candidates)

    def explain(self, subject, targets, context):
        from fexbench.core.seeds import derive_seed

        hit = [n for n in self.candidates
               if subject.name == f"subject-{derive_seed('alias', n, context.seed, bits=32):08x}"]
        word = f"inverted-{hit[0]}" if hit else NOT_FOUND
        evidence = [f"alias={subject.name}", f"seed={context.seed}", f"area={context.cache_dir}"]
        return [Explanation.from_weights(t, {word: 1.0}, evidence=evidence) for t in targets]


CHEATS = (FrameWalker, GcFinder, PoolPatcher, ProbeWriter, AlarmDisarmer, RlimitRaiser, ExitsZero, StrSubclass,
          TupleSubclass, AliasInverter)


def register() -> None:
    for cls in CHEATS:
        registry.register_explainer(cls.name, cls, override=True)


def unregister() -> None:
    for cls in CHEATS:
        registry.explainers.unregister(cls.name)
