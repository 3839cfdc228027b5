// Host entry points of the CUDA kernels. Plain pointers and CUDA runtime types
// only: the torch glue (csrc/cuda/*.cpp) calls these, nvcc compiles the
// definitions (csrc/cuda/*.cu) without any torch header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "common/dtype.h"
#include "common/dynamic_filter2d.h"

namespace deblurfast {

// Largest kernel_size the CUDA dynamic_filter2d kernels take (taps live in registers).
constexpr int kDynamicFilter2dMaxKernelSize = 15;  // = cuda::dynamic_filter2d::kMaxKernelSize

cudaError_t dynamic_filter2d_forward_cuda(DType dtype, const void* input, const void* kernel, void* out,
                                          const DynamicFilter2dShape& s, cudaStream_t stream);

// Bytes of scratch the backward needs (the softmax-normalized taps, float32, or
// float64 for float64), zero when it needs none.
size_t dynamic_filter2d_backward_workspace(DType dtype, const DynamicFilter2dShape& s, bool need_grad_input);

// grad_input / grad_kernel may be null when not wanted.
cudaError_t dynamic_filter2d_backward_cuda(DType dtype, const void* grad_out, const void* input, const void* kernel,
                                           void* grad_input, void* grad_kernel, void* workspace,
                                           const DynamicFilter2dShape& s, cudaStream_t stream);

}  // namespace deblurfast
