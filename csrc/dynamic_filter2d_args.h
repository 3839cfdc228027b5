// Argument checks of dynamic_filter2d for the torch glue of every device.
// The Python wrapper checks first with friendlier messages; these guard
// direct callers of torch.ops.deblurfast.*.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <limits>

#include "common/dynamic_filter2d.h"

namespace deblurfast {

inline PadMode parse_pad_mode(c10::string_view mode) {
  if (mode == "zeros") return PadMode::Zeros;
  if (mode == "reflect") return PadMode::Reflect;
  if (mode == "replicate") return PadMode::Replicate;
  TORCH_CHECK(false, "dynamic_filter2d: padding_mode must be 'zeros', 'reflect' or 'replicate', got '",
              std::string(mode), "'");
}

inline DynamicFilter2dShape dynamic_filter2d_shape(const at::Tensor& input, const at::Tensor& kernel,
                                                   int64_t kernel_size, int64_t dilation,
                                                   c10::string_view padding_mode, bool softmax) {
  TORCH_CHECK(input.dim() == 4, "dynamic_filter2d: input must be (N, C, H, W), got shape ", input.sizes());
  TORCH_CHECK(kernel.dim() == 4, "dynamic_filter2d: kernel must be (N, G*k*k, H, W), got shape ",
              kernel.sizes());
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, "dynamic_filter2d: kernel_size must be odd, got ",
              kernel_size);
  TORCH_CHECK(dilation >= 1, "dynamic_filter2d: dilation must be >= 1, got ", dilation);
  // kernel_size^2 taps and positions up to max(H, W) + dilation*(kernel_size-1) are int64.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  TORCH_CHECK(kernel_size < (int64_t(1) << 31), "dynamic_filter2d: kernel_size must be < 2^31, got ", kernel_size);
  TORCH_CHECK(dilation <= (kMax - std::max(input.size(2), input.size(3))) / std::max<int64_t>(1, kernel_size - 1),
              "dynamic_filter2d: the padded size max(H, W) + dilation*(kernel_size-1) does not fit in int64, got "
              "dilation ", dilation);
  TORCH_CHECK(input.scalar_type() == kernel.scalar_type(), "dynamic_filter2d: kernel dtype ",
              kernel.scalar_type(), " differs from input dtype ", input.scalar_type());
  TORCH_CHECK(input.device() == kernel.device(), "dynamic_filter2d: kernel is on ", kernel.device(),
              ", input on ", input.device());
  DynamicFilter2dShape s;
  s.N = input.size(0);
  s.C = input.size(1);
  s.H = input.size(2);
  s.W = input.size(3);
  s.kernel_size = kernel_size;
  s.dilation = dilation;
  s.pad = dilation * (kernel_size - 1) / 2;
  s.mode = parse_pad_mode(padding_mode);
  s.softmax = softmax;
  const int64_t K2 = kernel_size * kernel_size;
  TORCH_CHECK(kernel.size(1) % K2 == 0 && kernel.size(1) > 0, "dynamic_filter2d: kernel has ", kernel.size(1),
              " channels, expected a positive multiple of kernel_size^2 = ", K2);
  s.groups = kernel.size(1) / K2;
  TORCH_CHECK(s.C % s.groups == 0, "dynamic_filter2d: input channels ", s.C, " not divisible by kernel groups ",
              s.groups);
  TORCH_CHECK(kernel.size(0) == s.N && kernel.size(2) == s.H && kernel.size(3) == s.W,
              "dynamic_filter2d: kernel shape ", kernel.sizes(), " must be (N, G*k*k, H, W) with (N, H, W) = (",
              s.N, ", ", s.H, ", ", s.W, ") of input");
  if (s.mode == PadMode::Reflect) {
    TORCH_CHECK(s.pad < s.H && s.pad < s.W, "dynamic_filter2d: reflect padding ", s.pad,
                " must be smaller than the input's H and W, got ", s.H, "x", s.W);
  }
  if (s.mode == PadMode::Replicate && s.pad > 0) {
    TORCH_CHECK(s.H > 0 && s.W > 0, "dynamic_filter2d: replicate padding needs a non-empty image, got ", s.H,
                "x", s.W);
  }
  return s;
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input) {
  TORCH_CHECK(grad_output.sizes() == input.sizes(), "dynamic_filter2d_backward: grad_output shape ",
              grad_output.sizes(), " differs from input shape ", input.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && grad_output.device() == input.device(),
              "dynamic_filter2d_backward: grad_output must match input's dtype and device");
}

}  // namespace deblurfast
