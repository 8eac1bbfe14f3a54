"""Layer 1, the representation: gates, circuits as data, the ansatz library and noise models.

Imports nothing else of qcxr.quantum.
"""
