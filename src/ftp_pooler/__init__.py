"""ftp-pooler: a Trio worker that moves files between FTP servers and local disk."""

from __future__ import annotations


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's, the one place it is set).

    ``0+unknown`` when the package runs from a source tree that was never installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ftp-pooler")
    except PackageNotFoundError:
        return "0+unknown"
