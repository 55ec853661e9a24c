"""The typed exception tree.

Expected outcomes (a request that misses its SLO, a router that keeps a request pending) are return values,
never exceptions. Exceptions are for inputs and configurations the program cannot use; each one says what was
wrong and how to fix it. Only ``polyserve.cli`` turns them into exit codes.
"""

from __future__ import annotations


class PolyServeError(Exception):
    """Base class of every error PolyServe raises on purpose."""


class ConfigError(PolyServeError, ValueError):
    """A configuration value is invalid (negative rate, unknown name, weights that do not sum to > 0...)."""


class RegistryError(ConfigError, KeyError):
    """An unknown or duplicate name in a registry. The message lists the names that do exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelDoesNotFitError(ConfigError):
    """The model's weights do not fit in the instance's usable GPU memory (e.g. Llama-3.1-70B on one H100)."""


class InputError(PolyServeError, ValueError):
    """A bad row or field in an input file.

    ``str()`` is exactly one line ``FILE:LINE: FIELD: what is wrong`` (LINE is 1-based and the header is
    line 1), which is what the CLI prints on stderr before exiting non-zero.
    """

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"
