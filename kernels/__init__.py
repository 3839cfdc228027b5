"""deblurfast's Triton kernels, one module per op (installed as deblurfast.kernels).

Importing a module imports triton; on CPU they run under TRITON_INTERPRET=1,
which must be set before triton is imported.
"""
