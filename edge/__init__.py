"""sensing-edge: the edge service of a digital office-affairs platform (DB33/T 2474-2022)."""

__version__ = "0.1.0"
