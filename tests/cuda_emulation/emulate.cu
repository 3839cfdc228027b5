// CPU emulation of deblurfast's CUDA kernels: the functors the GPU runs
// (csrc/cuda/*.cuh), executed item by item in host loops. Built by nvcc as a
// host shared library and driven from tests/test_cuda_emulation.py through
// ctypes, so the CUDA kernels' arithmetic is tested where there is no GPU.
#include "cuda/dynamic_filter2d.cuh"

using deblurfast::DType;
using deblurfast::DynamicFilter2dShape;
using deblurfast::PadMode;
namespace df = deblurfast::cuda::dynamic_filter2d;

namespace {
DynamicFilter2dShape shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t groups, int64_t k, int64_t dilation,
                           int mode, int softmax) {
  return {N, C, H, W, groups, k, dilation, dilation * (k - 1) / 2, static_cast<PadMode>(mode), softmax != 0};
}
}  // namespace

extern "C" {

// min_items sets the channel chunking as on a GPU with min_items / 8192 SMs.
int emulate_dynamic_filter2d_forward(int dtype, const void* input, const void* kernel, void* out, int64_t N,
                                     int64_t C, int64_t H, int64_t W, int64_t groups, int64_t k, int64_t dilation,
                                     int mode, int softmax, int64_t min_items) {
  const DynamicFilter2dShape s = shape(N, C, H, W, groups, k, dilation, mode, softmax);
  return df::forward(deblurfast::cuda::HostRunner{}, static_cast<DType>(dtype), input, kernel, out, s,
                     df::channel_chunks(s, min_items));
}

int64_t emulate_dynamic_filter2d_workspace(int dtype, int64_t N, int64_t C, int64_t H, int64_t W, int64_t groups,
                                           int64_t k, int64_t dilation, int mode, int softmax, int need_grad_input) {
  const DynamicFilter2dShape s = shape(N, C, H, W, groups, k, dilation, mode, softmax);
  return static_cast<int64_t>(df::backward_workspace(static_cast<DType>(dtype), s, need_grad_input != 0));
}

int emulate_dynamic_filter2d_backward(int dtype, const void* grad_out, const void* input, const void* kernel,
                                      void* grad_input, void* grad_kernel, void* workspace, int64_t N, int64_t C,
                                      int64_t H, int64_t W, int64_t groups, int64_t k, int64_t dilation, int mode,
                                      int softmax, int64_t min_items) {
  const DynamicFilter2dShape s = shape(N, C, H, W, groups, k, dilation, mode, softmax);
  return df::backward(deblurfast::cuda::HostRunner{}, static_cast<DType>(dtype), grad_out, input, kernel, grad_input,
                      grad_kernel, workspace, s, df::channel_chunks(s, min_items));
}

}  // extern "C"
