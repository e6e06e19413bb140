"""vdc: video action dataset condensation."""
__version__ = "0.1.0"
