// Argument checks of deform_conv2d for the torch glue of every device. The
// Python wrapper checks first with friendlier messages; these guard direct
// callers of torch.ops.deblurfast.*.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <limits>

#include "common/deform_conv2d.h"

namespace deblurfast {

// Arguments in the op's (public) order, mask last.
inline DeformConv2dShape deform_conv2d_shape(const at::Tensor& input, const c10::optional<at::Tensor>& offset,
                                             const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                             at::IntArrayRef stride, at::IntArrayRef padding,
                                             at::IntArrayRef dilation, const c10::optional<at::Tensor>& mask) {
  TORCH_CHECK(input.dim() == 4, "deform_conv2d: input must be (N, Cin, H, W), got shape ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv2d: weight must be (Cout, Cin/groups, kh, kw), got shape ",
              weight.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "deform_conv2d: stride, padding and dilation must have 2 elements each");
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 && padding[0] >= 0 &&
                  padding[1] >= 0,
              "deform_conv2d: need stride >= 1, dilation >= 1, padding >= 0; got ", stride, ", ", dilation, ", ",
              padding);
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == input.scalar_type(), "deform_conv2d: ", name, " dtype ", t.scalar_type(),
                " differs from input dtype ", input.scalar_type());
    TORCH_CHECK(t.device() == input.device(), "deform_conv2d: ", name, " is on ", t.device(), ", input on ",
                input.device());
  };
  same(weight, "weight");
  DeformConv2dShape s;
  s.N = input.size(0);
  s.Cin = input.size(1);
  s.H = input.size(2);
  s.W = input.size(3);
  s.Cout = weight.size(0);
  s.kh = weight.size(2);
  s.kw = weight.size(3);
  s.sh = stride[0];
  s.sw = stride[1];
  s.ph = padding[0];
  s.pw = padding[1];
  s.dh = dilation[0];
  s.dw = dilation[1];
  TORCH_CHECK(weight.size(1) > 0 && s.Cin % weight.size(1) == 0, "deform_conv2d: input channels ", s.Cin,
              " must be a multiple of weight.shape[1] = ", weight.size(1));
  s.groups = s.Cin / weight.size(1);
  TORCH_CHECK(s.Cout % s.groups == 0, "deform_conv2d: Cout ", s.Cout, " not divisible by groups ", s.groups);
  TORCH_CHECK(s.kh > 0 && s.kw > 0, "deform_conv2d: empty kernel");
  // Sizes and positions are int64: H + 2*padding and dilation*(k-1) must not overflow (nor does
  // anything else then: every position lies within the padded image).
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  TORCH_CHECK(s.ph <= (kMax - s.H) / 2 && s.pw <= (kMax - s.W) / 2,
              "deform_conv2d: the padded size H + 2*padding does not fit in int64, got padding ", padding);
  TORCH_CHECK(s.dh <= kMax / std::max<int64_t>(1, s.kh - 1) && s.dw <= kMax / std::max<int64_t>(1, s.kw - 1),
              "deform_conv2d: dilation*(kernel size - 1) does not fit in int64, got dilation ", dilation);
  s.Ho = (s.H + 2 * s.ph - s.dh * (s.kh - 1) - 1) / s.sh + 1;
  s.Wo = (s.W + 2 * s.pw - s.dw * (s.kw - 1) - 1) / s.sw + 1;
  TORCH_CHECK(s.H + 2 * s.ph - s.dh * (s.kh - 1) - 1 >= 0 && s.W + 2 * s.pw - s.dw * (s.kw - 1) - 1 >= 0,
              "deform_conv2d: output size is not positive");
  const int64_t K = s.taps();
  s.has_offset = offset.has_value() && offset->defined();
  s.has_mask = mask.has_value() && mask->defined();
  s.has_bias = bias.has_value() && bias->defined();
  s.offset_groups = 1;
  if (s.has_offset) {
    same(*offset, "offset");
    TORCH_CHECK(offset->dim() == 4 && offset->size(1) > 0 && offset->size(1) % (2 * K) == 0,
                "deform_conv2d: offset must be (N, 2*G*kh*kw, Ho, Wo), got shape ", offset->sizes());
    s.offset_groups = offset->size(1) / (2 * K);
    TORCH_CHECK(offset->size(0) == s.N && offset->size(2) == s.Ho && offset->size(3) == s.Wo,
                "deform_conv2d: offset shape ", offset->sizes(), " must be (", s.N, ", ", 2 * s.offset_groups * K,
                ", ", s.Ho, ", ", s.Wo, ")");
  }
  if (s.has_mask) {
    same(*mask, "mask");
    TORCH_CHECK(mask->dim() == 4 && mask->size(1) > 0 && mask->size(1) % K == 0,
                "deform_conv2d: mask must be (N, G*kh*kw, Ho, Wo), got shape ", mask->sizes());
    if (!s.has_offset) s.offset_groups = mask->size(1) / K;
    TORCH_CHECK(mask->size(0) == s.N && mask->size(1) == s.offset_groups * K && mask->size(2) == s.Ho &&
                    mask->size(3) == s.Wo,
                "deform_conv2d: mask shape ", mask->sizes(), " must be (", s.N, ", ", s.offset_groups * K, ", ",
                s.Ho, ", ", s.Wo, ")");
  }
  TORCH_CHECK(s.Cin % s.offset_groups == 0, "deform_conv2d: input channels ", s.Cin,
              " not divisible by offset groups ", s.offset_groups);
  if (s.has_bias) {
    same(*bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.Cout, "deform_conv2d: bias must be (", s.Cout,
                ",), got shape ", bias->sizes());
  }
  return s;
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input, const DeformConv2dShape& s) {
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({s.N, s.Cout, s.Ho, s.Wo}),
              "deform_conv2d_backward: grad_output shape ", grad_output.sizes(), " must be (", s.N, ", ", s.Cout,
              ", ", s.Ho, ", ", s.Wo, ")");
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && grad_output.device() == input.device(),
              "deform_conv2d_backward: grad_output must match input's dtype and device");
}

}  // namespace deblurfast
