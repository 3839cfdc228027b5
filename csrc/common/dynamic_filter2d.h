// Geometry of one dynamic_filter2d call, shared by the CPU and CUDA kernels.
// No torch headers (nvcc compiles this without them).
#pragma once

#include <cstdint>

#include "common/padding.h"

namespace deblurfast {

// Largest kernel_size the CUDA dynamic_filter2d kernels take (taps live in registers;
// = cuda::dynamic_filter2d::kMaxKernelSize). Python reads it from deblurfast._C.
constexpr int kDynamicFilter2dMaxKernelSize = 15;

struct DynamicFilter2dShape {
  int64_t N, C, H, W;
  int64_t groups;       // G: channel c uses kernel group c / (C / G)
  int64_t kernel_size;  // k, odd
  int64_t dilation;
  int64_t pad;          // dilation * (k - 1) / 2 on every side
  PadMode mode;
  bool softmax;         // softmax over the k*k taps before use

  int64_t taps() const { return kernel_size * kernel_size; }
  int64_t channels_per_group() const { return C / groups; }
};

}  // namespace deblurfast
