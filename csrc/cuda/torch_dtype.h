// Torch-side helpers of the CUDA glue: dtype mapping and launch-error checks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include "common/dtype.h"

namespace deblurfast {

inline DType cuda_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK(false, "deblurfast (cuda): unsupported dtype ", t.scalar_type(),
                         "; expected float32, float64, float16 or bfloat16");
  }
}

inline void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "deblurfast.", op, " (cuda): ", cudaGetErrorString(err));
}

}  // namespace deblurfast
