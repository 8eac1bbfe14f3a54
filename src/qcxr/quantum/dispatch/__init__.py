"""Layer 4, the dispatcher: `expvals`, the method choosers and the memory model.

Imports every layer below; nothing in qcxr.quantum imports it except the package's __init__.
"""
