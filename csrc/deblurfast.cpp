// Every compiled op's schema, in one place. Device kernels add themselves with
// TORCH_LIBRARY_IMPL in csrc/cpu and csrc/cuda; fake kernels and autograd are
// registered from Python (deblurfast/ops/<op>/).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(deblurfast, m) {
  // ops.md §2. padding_mode: "zeros" | "reflect" | "replicate".
  m.def(
      "dynamic_filter2d(Tensor input, Tensor kernel, int kernel_size, int dilation, "
      "str padding_mode, bool softmax) -> Tensor");
  // Returns (grad_input, grad_kernel); an output not asked for in output_mask
  // comes back as an empty tensor.
  m.def(
      "dynamic_filter2d_backward(Tensor grad_output, Tensor input, Tensor kernel, "
      "int kernel_size, int dilation, str padding_mode, bool softmax, bool[2] output_mask) "
      "-> (Tensor, Tensor)");
  // ops.md §1. offset None: all zero (integer sampling); mask None: all one.
  m.def(
      "deform_conv2d(Tensor input, Tensor? offset, Tensor weight, Tensor? bias, Tensor? mask, int[2] stride, "
      "int[2] padding, int[2] dilation) -> Tensor");
  // Returns (grad_input, grad_offset, grad_weight, grad_bias, grad_mask); a
  // gradient not asked for in output_mask (or of an absent tensor) comes back
  // as an empty tensor.
  m.def(
      "deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor? offset, Tensor weight, Tensor? bias, "
      "Tensor? mask, int[2] stride, int[2] padding, int[2] dilation, bool[5] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // ops.md §4. strip_pool returns one buffer [N, C, H*K + K*W] (K = sum(sizes)): per plane the v maps
  // [H, K] (size n's bins at columns [sum of the sizes before n, + n)), then the h maps [K, W].
  m.def("strip_pool(Tensor x, int[] sizes) -> Tensor");
  m.def("strip_pool_backward(Tensor grad_buf, Tensor x, int[] sizes, bool[1] output_mask) -> Tensor[]");
  m.def("strip_expand(Tensor v, Tensor h, int H, int W) -> Tensor");
  m.def(
      "strip_expand_backward(Tensor grad_out, Tensor v, Tensor h, int H, int W, bool[2] output_mask) "
      "-> (Tensor, Tensor)");
  m.def(
      "blur_aware_mask(Tensor x, Tensor row_table, Tensor col_table, Tensor weight, Tensor? bias, "
      "Tensor col_index, Tensor row_index) -> Tensor");
  // The index tensors take no gradient: their slots are empty tensors.
  m.def(
      "blur_aware_mask_backward(Tensor grad_out, Tensor x, Tensor row_table, Tensor col_table, Tensor weight, "
      "Tensor? bias, Tensor col_index, Tensor row_index, bool[7] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // ops.md §3.
  m.def("efficient_attention(Tensor value, Tensor key, Tensor query, Tensor? gate) -> Tensor");
  m.def(
      "efficient_attention_backward(Tensor grad_output, Tensor value, Tensor key, Tensor query, Tensor? gate, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
}

// A plain extension module: importing deblurfast._C loads the library above.
// It also tells Python what was compiled in.
static PyModuleDef deblurfast_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&deblurfast_module);
  if (module == nullptr) return nullptr;
#ifdef DEBLURFAST_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
#ifdef _OPENMP
  const long with_openmp = 1;
#else
  const long with_openmp = 0;
#endif
  if (PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) < 0 ||
      PyModule_AddIntConstant(module, "WITH_OPENMP", with_openmp) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
