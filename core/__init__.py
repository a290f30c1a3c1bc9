"""Orchestra's backbone (installed as ``orchestra``): manifest, executions, errors, runtime helpers."""
__version__ = "0.1.0"
