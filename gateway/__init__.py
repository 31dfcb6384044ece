"""dsgw: the trusted data-space gateway."""

__version__ = "0.1.0"
