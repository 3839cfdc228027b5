"""One module per Triton kernel module: each defines KERNELS (every @triton.jit
kernel it launches) and cases() yielding (name, kernel, pointer types,
constexprs) that span the kernels' constexpr branches. Used by
kernels_under_test.py (run by test_triton_compile.py)."""
