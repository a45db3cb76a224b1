"""cyberrange: a cyber range and network digital twin for defensive testing."""
__version__ = "0.1.0"
