"""Errors that end a command with one clear line instead of a traceback."""


def first_line(error: BaseException, limit: int | None = None) -> str:
    """An error's first non-blank line (its type's name when it has no message), at most ``limit``
    characters: what a one-line message quotes of a library's multi-line error.

    >>> first_line(ValueError("bad value\n  at line 3"))
    'bad value'
    """
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return text if limit is None else text[:limit]


class FraudlakeError(Exception):
    """A problem the user can fix; the CLI prints it as one line."""

    exit_code = 1


class ConfigError(FraudlakeError):
    """Bad settings: unknown key, wrong type, missing file. Exit code 2, like a usage error."""

    exit_code = 2


class NotFoundError(FraudlakeError):
    """What was asked for does not exist (an audited transaction id). Exit code 4, so a
    script can tell "no such transaction" from a failure."""

    exit_code = 4


class EnvironmentProblem(FraudlakeError):
    """The machine cannot run Spark as asked (no Java, jars not resolvable, no workspace)."""

    exit_code = 3
