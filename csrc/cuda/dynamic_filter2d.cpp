// Torch glue of the CUDA dynamic_filter2d kernels: checks, allocation, stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/launch.h"
#include "cuda/torch_dtype.h"
#include "dynamic_filter2d_args.h"

namespace deblurfast {
namespace {

// The arguments' shape (checked by dynamic_filter2d_args.h) within the CUDA kernels' limits.
DynamicFilter2dShape checked_shape(const at::Tensor& input, const at::Tensor& kernel, int64_t kernel_size,
                                   int64_t dilation, c10::string_view padding_mode, bool softmax) {
  const DynamicFilter2dShape s = dynamic_filter2d_shape(input, kernel, kernel_size, dilation, padding_mode, softmax);
  TORCH_CHECK(kernel_size <= kDynamicFilter2dMaxKernelSize, "dynamic_filter2d (cuda): kernel_size at most ",
              kDynamicFilter2dMaxKernelSize, ", got ", kernel_size);
  TORCH_CHECK(s.H * s.W < kInt32Limit, "dynamic_filter2d (cuda): H*W must be < 2^31, got ", s.H, "x", s.W);
  return s;
}

at::Tensor dynamic_filter2d_op(const at::Tensor& input, const at::Tensor& kernel, int64_t kernel_size,
                               int64_t dilation, c10::string_view padding_mode, bool softmax) {
  const DynamicFilter2dShape s = checked_shape(input, kernel, kernel_size, dilation, padding_mode, softmax);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(), k = kernel.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  check_cuda(dynamic_filter2d_forward_cuda(cuda_dtype(x), x.const_data_ptr(), k.const_data_ptr(),
                                           out.mutable_data_ptr(), s, c10::cuda::getCurrentCUDAStream().stream()),
             "dynamic_filter2d");
  return out;
}

std::tuple<at::Tensor, at::Tensor> dynamic_filter2d_backward_op(const at::Tensor& grad_output,
                                                                const at::Tensor& input, const at::Tensor& kernel,
                                                                int64_t kernel_size, int64_t dilation,
                                                                c10::string_view padding_mode, bool softmax,
                                                                std::array<bool, 2> output_mask) {
  const DynamicFilter2dShape s = checked_shape(input, kernel, kernel_size, dilation, padding_mode, softmax);
  check_grad_output(grad_output, input);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous(), k = kernel.contiguous();
  // Every element of a requested gradient is written by the kernels (with no
  // input channels, the kernel gradient is all zero).
  at::Tensor grad_in = output_mask[0] ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_k = output_mask[1] ? at::empty_like(k) : at::empty({0}, k.options());
  if (x.numel() == 0) return {grad_in, grad_k.zero_()};
  const DType dtype = cuda_dtype(x);
  const size_t workspace_bytes = dynamic_filter2d_backward_workspace(dtype, s, output_mask[0]);
  at::Tensor workspace = at::empty({static_cast<int64_t>(workspace_bytes)}, x.options().dtype(at::kByte));
  check_cuda(dynamic_filter2d_backward_cuda(dtype, go.const_data_ptr(), x.const_data_ptr(), k.const_data_ptr(),
                                            output_mask[0] ? grad_in.mutable_data_ptr() : nullptr,
                                            output_mask[1] ? grad_k.mutable_data_ptr() : nullptr,
                                            workspace_bytes ? workspace.mutable_data_ptr() : nullptr, s,
                                            c10::cuda::getCurrentCUDAStream().stream()),
             "dynamic_filter2d_backward");
  return {grad_in, grad_k};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurfast, CUDA, m) {
  m.impl("dynamic_filter2d", &dynamic_filter2d_op);
  m.impl("dynamic_filter2d_backward", &dynamic_filter2d_backward_op);
}

}  // namespace deblurfast
