"""Errors that carry their fix. The CLI prints them as one line and exits 1."""


class CurateError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class InputError(CurateError):
    """A file, path or format given by the user cannot be read."""


class StoreError(CurateError):
    """The conversation store cannot be opened or written."""


class ConfigError(CurateError):
    """A configuration file or option is invalid."""


class StrictModeError(CurateError):
    """`--strict` was given and some records were quarantined."""
