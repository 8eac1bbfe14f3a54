"""Layer 3, methods: statevector, split, mps, density matrix, trajectories, shots.

Each method owns its cost and memory estimate. Imports the representation and kernels.
"""
