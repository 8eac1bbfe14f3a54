"""Layer 3, beside the methods: wire cutting and the QCNN built on it.

Imports the representation, kernels and methods.
"""
