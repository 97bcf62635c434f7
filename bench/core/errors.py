"""The base of every error that is the user's to fix (a bad argument, a missing folder, a folder
that cannot be compared): the command line prints such an error as one line, exit status 2, never
a traceback. Errors that are fexbench's own bugs are not UsageErrors and keep their traceback."""


class UsageError(Exception):
    """A problem with what the user asked for or pointed at; the message names it."""


class ResultsError(ValueError):
    """A result file (or its dict form) that cannot be read as a result; the message names the file
    and the field."""
