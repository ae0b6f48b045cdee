"""The package version (the same as pyproject.toml's; a test checks that they agree)."""
__version__ = "0.1.0"


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml), or the package's own in a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iiae")
    except PackageNotFoundError:
        return __version__
