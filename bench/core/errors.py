"""The base of every error that is the user's to fix (a bad argument, a missing folder, a folder
that cannot be compared): the command line prints such an error as one line, exit status 2, never
a traceback. Errors that are fexbench's own bugs are not UsageErrors and keep their traceback."""


class UsageError(Exception):
    """A problem with what the user asked for or pointed at; the message names it."""


class ResultsError(ValueError):
    """A result file (or its dict form) that cannot be read as a result; the message names the file
    and the field."""


# --- a write into a read-only probe array, named ---

READ_ONLY_RULE = "explainers must not modify probe arrays"
_PROBE_ARRAYS = ("images", "features", "logits")


def is_read_only_write(exc: BaseException) -> bool:
    """numpy's refusal of a write into a read-only array ("assignment destination is read-only",
    "output array is read-only", "... writeable flag ...")."""
    text = str(exc).lower()
    return isinstance(exc, ValueError) and ("read-only" in text or "writeable flag" in text)


def read_only_write_message(exc: BaseException, probe: object = None, who: str = "the explainer") -> str | None:
    """The message for an explainer's write into a read-only probe array, naming the array (which
    context.probe field, and the explainer's variable that held it) and the rule, with what to do;
    None when `exc` is not such a write. `probe`: the Probe the explainer was given (its arrays are
    matched against the arrays in the failing frames' locals); without it the field is guessed from
    the failing source line. `who`: how to name the explainer, e.g. "explainer 'my-method'".

    The harness's two places that turn an explainer's exception into an error row should call it:
    fexbench.harness.runner.explain_cases (inline) and fexbench.harness.worker._error_text (worker)."""
    if not is_read_only_write(exc):
        return None
    field, variable = _written_probe_array(exc, probe)
    if field:
        where = f"context.probe.{field}" + (f" (held in {variable!r})" if variable and variable != field else "")
        fix = f"np.array(context.probe.{field})"
    else:
        names = ", ".join(f"context.probe.{n}" for n in _PROBE_ARRAYS)
        where = (f"{variable!r}, a read-only probe array" if variable else "a read-only probe array") + f" (one of {names})"
        fix = "np.array(context.probe.<array>)"
    return (f"{who} wrote into {where}, which is read-only: {READ_ONLY_RULE} (they are shared with every other "
            f"explainer); copy it first: {fix} [{type(exc).__name__}: {exc}]")


def _written_probe_array(exc: BaseException, probe: object) -> tuple[str | None, str | None]:
    """(the probe field written into, the local variable that held it), innermost frame first;
    either may be None when it cannot be told."""
    import linecache

    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None, None
    arrays = {n: getattr(probe, n) for n in _PROBE_ARRAYS if isinstance(getattr(probe, n, None), np.ndarray)}
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    for tb in reversed(frames):
        frame = tb.tb_frame
        for variable, value in list(frame.f_locals.items()):
            if not isinstance(value, np.ndarray) or value.flags.writeable or value.size == 0:
                continue
            for field, array in arrays.items():
                try:
                    shared = np.may_share_memory(value, array)
                except (TypeError, ValueError):
                    shared = False
                if shared:
                    return field, variable
        line = linecache.getline(frame.f_code.co_filename, tb.tb_lineno)
        for field in _PROBE_ARRAYS:
            if f".{field}" in line:
                return field, None
    for tb in reversed(frames):  # no probe given (or no match): the innermost read-only local array
        for variable, value in list(tb.tb_frame.f_locals.items()):
            if isinstance(value, np.ndarray) and not value.flags.writeable:
                return (variable if variable in _PROBE_ARRAYS else None), variable
    return None, None
