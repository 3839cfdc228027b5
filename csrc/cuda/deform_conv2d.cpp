// Torch glue of the CUDA deform_conv2d kernels: checks, allocation, stream.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "cuda/launch.h"
#include "cuda/torch_dtype.h"
#include "deform_conv2d_args.h"

namespace deblurfast {
namespace {

// The arguments' shape (checked by deform_conv2d_args.h) within the CUDA kernels' limits.
DeformConv2dShape checked_shape(const at::Tensor& input, const c10::optional<at::Tensor>& offset,
                                const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                const c10::optional<at::Tensor>& mask) {
  const DeformConv2dShape s = deform_conv2d_shape(input, offset, weight, bias, stride, padding, dilation, mask);
  // The kernels index within one image plane with int32.
  TORCH_CHECK(s.H < kInt32Limit && s.W < kInt32Limit && s.H * s.W < kInt32Limit,
              "deform_conv2d (cuda): H*W must be < 2^31, got ", s.H, "x", s.W);
  TORCH_CHECK(s.Ho * s.Wo < kInt32Limit, "deform_conv2d (cuda): Ho*Wo must be < 2^31, got ", s.Ho, "x", s.Wo);
  return s;
}

// The tensor made contiguous, or an undefined tensor when absent.
at::Tensor contiguous_or_none(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

at::Tensor deform_conv2d_op(const at::Tensor& input, const c10::optional<at::Tensor>& offset,
                              const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              const c10::optional<at::Tensor>& mask) {
  const DeformConv2dShape s = checked_shape(input, offset, weight, bias, stride, padding, dilation, mask);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const at::Tensor off = contiguous_or_none(offset), m = contiguous_or_none(mask), b = contiguous_or_none(bias);
  at::Tensor out = at::empty({s.N, s.Cout, s.Ho, s.Wo}, x.options());
  if (out.numel() == 0) return out;
  const DType dtype = cuda_dtype(x);
  const size_t workspace_bytes = deform_conv2d_forward_workspace(dtype, s);
  at::Tensor workspace = at::empty({static_cast<int64_t>(workspace_bytes)}, x.options().dtype(at::kByte));
  check_cuda(deform_conv2d_forward_cuda(dtype, x.const_data_ptr(), data_or_null(off), w.const_data_ptr(),
                                        data_or_null(b), data_or_null(m), out.mutable_data_ptr(),
                                        workspace_bytes ? workspace.mutable_data_ptr() : nullptr, s,
                                        c10::cuda::getCurrentCUDAStream().stream()),
             "deform_conv2d");
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_op(
    const at::Tensor& grad_output, const at::Tensor& input, const c10::optional<at::Tensor>& offset,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, const c10::optional<at::Tensor>& mask,
    std::array<bool, 5> output_mask) {
  const DeformConv2dShape s = checked_shape(input, offset, weight, bias, stride, padding, dilation, mask);
  check_grad_output(grad_output, input, s);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous(), w = weight.contiguous();
  const at::Tensor off = contiguous_or_none(offset), m = contiguous_or_none(mask);
  const bool want_input = output_mask[0], want_offset = output_mask[1] && s.has_offset,
             want_weight = output_mask[2], want_bias = output_mask[3] && s.has_bias,
             want_mask = output_mask[4] && s.has_mask;
  const auto grad_like = [&](bool wanted, at::IntArrayRef sizes) {
    return wanted ? at::empty(sizes, x.options()) : at::empty({0}, x.options());
  };
  // Every element of a requested gradient is written by the kernels.
  at::Tensor grad_input = grad_like(want_input, x.sizes());
  at::Tensor grad_offset = grad_like(want_offset, want_offset ? off.sizes() : at::IntArrayRef{});
  at::Tensor grad_weight = grad_like(want_weight, w.sizes());
  at::Tensor grad_bias = grad_like(want_bias, {s.Cout});
  at::Tensor grad_mask = grad_like(want_mask, want_mask ? m.sizes() : at::IntArrayRef{});
  // grad_input is accumulated with float atomicAdd: its summation order varies between runs.
  if (want_input) at::globalContext().alertNotDeterministic("deform_conv2d_backward_cuda");
  if (!(want_input || want_offset || want_weight || want_bias || want_mask))
    return {grad_input, grad_offset, grad_weight, grad_bias, grad_mask};
  const DType dtype = cuda_dtype(x);
  const size_t workspace_bytes =
      deform_conv2d_backward_workspace(dtype, s, want_input, want_offset, want_weight, want_bias, want_mask);
  at::Tensor workspace = at::empty({static_cast<int64_t>(workspace_bytes)}, x.options().dtype(at::kByte));
  const auto out_or_null = [](bool wanted, at::Tensor& t) { return wanted ? t.mutable_data_ptr() : nullptr; };
  check_cuda(deform_conv2d_backward_cuda(
                 dtype, go.const_data_ptr(), x.const_data_ptr(), data_or_null(off), w.const_data_ptr(),
                 data_or_null(m), out_or_null(want_input, grad_input), out_or_null(want_offset, grad_offset),
                 out_or_null(want_weight, grad_weight), out_or_null(want_bias, grad_bias),
                 out_or_null(want_mask, grad_mask), workspace_bytes ? workspace.mutable_data_ptr() : nullptr, s,
                 c10::cuda::getCurrentCUDAStream().stream()),
             "deform_conv2d_backward");
  return {grad_input, grad_offset, grad_weight, grad_bias, grad_mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurfast, CUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_op);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_op);
}

}  // namespace deblurfast
