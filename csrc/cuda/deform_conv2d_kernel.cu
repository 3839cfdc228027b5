// GPU entry points of the deform_conv2d kernels (csrc/cuda/deform_conv2d.cuh).
#include "cuda/deform_conv2d.cuh"
#include "cuda/launch.h"

namespace deblurfast {

namespace {
// Items wanted to fill the device: ~2 resident threads per SM thread slot.
cuda::deform_conv2d::Plan device_plan(DType dtype, const DeformConv2dShape& s) {
  return cuda::deform_conv2d::make_plan(dtype, s, int64_t(cuda::sm_count()) * 2048 * 2);
}
}  // namespace

size_t deform_conv2d_forward_workspace(DType dtype, const DeformConv2dShape& s) {
  return cuda::deform_conv2d::forward_workspace(dtype, s, device_plan(dtype, s));
}

cudaError_t deform_conv2d_forward_cuda(DType dtype, const void* input, const void* offset, const void* weight,
                                       const void* bias, const void* mask, void* out, void* workspace,
                                       const DeformConv2dShape& s, cudaStream_t stream) {
  return cuda::deform_conv2d::forward(cuda::DeviceRunner{stream}, dtype, input, offset, weight, bias, mask, out,
                                      workspace, s, device_plan(dtype, s));
}

size_t deform_conv2d_backward_workspace(DType dtype, const DeformConv2dShape& s, bool grad_input, bool grad_offset,
                                        bool grad_weight, bool grad_bias, bool grad_mask) {
  return cuda::deform_conv2d::backward_layout(dtype, s, device_plan(dtype, s), grad_input, grad_offset, grad_weight,
                                              grad_bias, grad_mask)
      .total;
}

cudaError_t deform_conv2d_backward_cuda(DType dtype, const void* grad_out, const void* input, const void* offset,
                                        const void* weight, const void* mask, void* grad_input, void* grad_offset,
                                        void* grad_weight, void* grad_bias, void* grad_mask, void* workspace,
                                        const DeformConv2dShape& s, cudaStream_t stream) {
  return cuda::deform_conv2d::backward(cuda::DeviceRunner{stream}, dtype, grad_out, input, offset, weight, mask,
                                       grad_input, grad_offset, grad_weight, grad_bias, grad_mask, workspace, s,
                                       device_plan(dtype, s));
}

}  // namespace deblurfast
