"""ftc.compiler: turns a TOML spec into a locked, reviewable build. Loads no weights, needs no GPU."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ftc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
