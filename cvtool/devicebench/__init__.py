"""benchmark-device: CPU vs GPU (vs MPS) timing of the matmul and conv2d kernels of vision models.

cases (shapes, FLOPs) -> devices (presence, dtypes, precision flags) -> workloads (inputs,
reference check) -> timing (timers, alternation) -> runner (results) -> report/plot/gate.
Only `cli` is imported by `cvtool --help`, and nothing here imports torch at module level.
"""
