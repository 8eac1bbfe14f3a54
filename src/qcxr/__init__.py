"""qcxr: hybrid quantum-classical transfer learning for long-tailed chest X-ray classification."""

__version__ = "0.1.0"
