// Geometry of one deform_conv2d call, shared by the CPU and CUDA kernels.
// No torch headers (nvcc compiles this without them).
#pragma once

#include <cstdint>

namespace deblurfast {

struct DeformConv2dShape {
  int64_t N, Cin, H, W;     // input
  int64_t Cout, Ho, Wo;     // output
  int64_t kh, kw;           // kernel
  int64_t sh, sw, ph, pw, dh, dw;  // stride, padding, dilation
  int64_t groups;           // weight groups: Cin / weight.shape[1]
  int64_t offset_groups;    // G: offset/mask groups (1 when both are absent)
  bool has_offset;          // false: every offset is zero (integer sampling, no interpolation)
  bool has_mask;            // false: every mask value is one
  bool has_bias;

  int64_t taps() const { return kh * kw; }
  int64_t cin_per_group() const { return Cin / groups; }            // weight.shape[1]
  int64_t cout_per_group() const { return Cout / groups; }
  int64_t cin_per_offset_group() const { return Cin / offset_groups; }
  int64_t out_pixels() const { return Ho * Wo; }
};

}  // namespace deblurfast
