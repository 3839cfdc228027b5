// Host entry points of the CUDA kernels. Plain pointers and CUDA runtime types
// only: the torch glue (csrc/cuda/*.cpp) calls these, nvcc compiles the
// definitions (csrc/cuda/*.cu) without any torch header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "common/deform_conv2d.h"
#include "common/dtype.h"
#include "common/dynamic_filter2d.h"

namespace deblurfast {

// The CUDA kernels index a plane (and deform_conv2d an output plane) with int32.
constexpr int64_t kInt32Limit = int64_t(1) << 31;

cudaError_t dynamic_filter2d_forward_cuda(DType dtype, const void* input, const void* kernel, void* out,
                                          const DynamicFilter2dShape& s, cudaStream_t stream);

// Bytes of scratch the backward needs (the softmax-normalized taps, float32, or
// float64 for float64), zero when it needs none.
size_t dynamic_filter2d_backward_workspace(DType dtype, const DynamicFilter2dShape& s, bool need_grad_input);

// grad_input / grad_kernel may be null when not wanted.
cudaError_t dynamic_filter2d_backward_cuda(DType dtype, const void* grad_out, const void* input, const void* kernel,
                                           void* grad_input, void* grad_kernel, void* workspace,
                                           const DynamicFilter2dShape& s, cudaStream_t stream);

// deform_conv2d (ops.md §1). offset / mask / bias are null when absent (and
// s.has_offset / has_mask / has_bias say so). The workspace (at least the
// bytes the *_workspace function returns, for the same dtype, shape and
// device) holds packed weights and partial sums; its contents on entry do not
// matter.
size_t deform_conv2d_forward_workspace(DType dtype, const DeformConv2dShape& s);

cudaError_t deform_conv2d_forward_cuda(DType dtype, const void* input, const void* offset, const void* weight,
                                       const void* bias, const void* mask, void* out, void* workspace,
                                       const DeformConv2dShape& s, cudaStream_t stream);

// The flags say which gradients will be passed (non-null) to the backward.
size_t deform_conv2d_backward_workspace(DType dtype, const DeformConv2dShape& s, bool grad_input, bool grad_offset,
                                        bool grad_weight, bool grad_bias, bool grad_mask);

// A gradient not wanted is null (grad_offset / grad_mask / grad_bias must be
// null when that tensor is absent); every one passed is fully written.
// grad_input is accumulated with float atomicAdd: not deterministic.
cudaError_t deform_conv2d_backward_cuda(DType dtype, const void* grad_out, const void* input, const void* offset,
                                        const void* weight, const void* mask, void* grad_input, void* grad_offset,
                                        void* grad_weight, void* grad_bias, void* grad_mask, void* workspace,
                                        const DeformConv2dShape& s, cudaStream_t stream);

}  // namespace deblurfast
