"""The package's version, in one place: pyproject.toml and __init__ read it here."""

__version__ = "0.3.0"
