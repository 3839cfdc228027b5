// The extension module. Each op's schema is declared once, in Python
// (deblurfast/ops/<op>/declaration.py, with its fake kernels, autograd and Triton
// twin); the device kernels here add themselves to it with TORCH_LIBRARY_IMPL
// in csrc/cpu and csrc/cuda, in the schema's (public) argument order.
#include <Python.h>

#include "common/dynamic_filter2d.h"

// A plain extension module: importing deblurfast._C loads the kernels. It also
// tells Python what was compiled in and the CUDA kernels' limits.
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
      PyModule_AddIntConstant(module, "WITH_OPENMP", with_openmp) < 0 ||
      PyModule_AddIntConstant(module, "DYNAMIC_FILTER2D_CUDA_MAX_KERNEL_SIZE",
                              deblurfast::kDynamicFilter2dMaxKernelSize) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
