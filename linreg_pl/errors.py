"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class ConfigError(ValueError):
    """A setting, file or checkpoint the user gave is unusable; the message says which and why."""
