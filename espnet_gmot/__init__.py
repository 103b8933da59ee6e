"""espnet-gmot: optimal-transport knowledge transfer from a PLM to ESPnet CTC models."""

__version__ = "0.1.0"
