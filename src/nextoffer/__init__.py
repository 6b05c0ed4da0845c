"""nextoffer: self-hosted offer decisioning."""

__version__ = "0.1.0"
