"""Layer 2, kernels: gate application and compiled ansatz programs.

Imports only the representation.
"""
