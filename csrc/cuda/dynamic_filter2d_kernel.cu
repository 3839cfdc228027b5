// GPU entry points of the dynamic_filter2d kernels (csrc/cuda/dynamic_filter2d.cuh).
#include "cuda/dynamic_filter2d.cuh"
#include "cuda/launch.h"

namespace deblurfast {

static_assert(kDynamicFilter2dMaxKernelSize == cuda::dynamic_filter2d::kMaxKernelSize,
              "launch.h and dynamic_filter2d.cuh disagree on the largest kernel size");

namespace {
// Enough items for ~4 resident threads per SM thread slot.
cuda::dynamic_filter2d::Work device_work(const DynamicFilter2dShape& s) {
  return cuda::dynamic_filter2d::channel_chunks(s, int64_t(cuda::sm_count()) * 2048 * 4);
}
}  // namespace

cudaError_t dynamic_filter2d_forward_cuda(DType dtype, const void* input, const void* kernel, void* out,
                                          const DynamicFilter2dShape& s, cudaStream_t stream) {
  return cuda::dynamic_filter2d::forward(cuda::DeviceRunner{stream}, dtype, input, kernel, out, s, device_work(s));
}

size_t dynamic_filter2d_backward_workspace(DType dtype, const DynamicFilter2dShape& s, bool need_grad_input) {
  return cuda::dynamic_filter2d::backward_workspace(dtype, s, need_grad_input);
}

cudaError_t dynamic_filter2d_backward_cuda(DType dtype, const void* grad_out, const void* input, const void* kernel,
                                           void* grad_input, void* grad_kernel, void* workspace,
                                           const DynamicFilter2dShape& s, cudaStream_t stream) {
  return cuda::dynamic_filter2d::backward(cuda::DeviceRunner{stream}, dtype, grad_out, input, kernel, grad_input,
                                          grad_kernel, workspace, s, device_work(s));
}

}  // namespace deblurfast
