"""Errors that end a command with one clear line instead of a traceback."""


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
