// Kernels as functors: a work item is `f(idx)`, a __host__ __device__ call.
// On the GPU one generic grid-stride kernel runs the items; on the host
// (tests/cuda_emulation) the same functors run in a loop, so CI checks the
// CUDA kernels' arithmetic on a machine without a GPU. Pure CUDA, no torch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common/dtype.h"

#if defined(__CUDACC__)
#define DEBLURFAST_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DEBLURFAST_HOST_DEVICE inline
#endif

namespace deblurfast {
namespace cuda {

constexpr int kThreads = 256;

// Accumulation type: float for the 16-bit types and float, double for double.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

DEBLURFAST_HOST_DEVICE float to_acc(float v) { return v; }
DEBLURFAST_HOST_DEVICE double to_acc(double v) { return v; }
DEBLURFAST_HOST_DEVICE float to_acc(__half v) { return __half2float(v); }
DEBLURFAST_HOST_DEVICE float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
DEBLURFAST_HOST_DEVICE T from_acc(acc_t<T> v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return v;
  }
}

DEBLURFAST_HOST_DEVICE float exp_acc(float v) { return expf(v); }
DEBLURFAST_HOST_DEVICE double exp_acc(double v) { return exp(v); }
DEBLURFAST_HOST_DEVICE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Quotient and remainder of any uint64 by a divisor fixed for a launch, from a multiply-high (Granlund and
// Montgomery 1994, fig. 4.1: l = ceil(log2 d), m = floor(2^64 (2^l - d) / d) + 1). A 64-bit `/` or `%`
// compiles to a subroutine call, and its calling convention cost every kernel using it a stack frame
// and spills; this is two shifts, a multiply-high and adds.
struct DivMod {
  uint64_t d = 1, m = 1;
  int shift1 = 0, shift2 = 0;

  DivMod() = default;
  explicit DivMod(int64_t divisor) : d(static_cast<uint64_t>(divisor < 1 ? 1 : divisor)) {
    int l = 0;
    while (l < 63 && (uint64_t(1) << l) < d) ++l;  // d <= 2^62: item counts and plane sizes
    m = static_cast<uint64_t>(((static_cast<unsigned __int128>((uint64_t(1) << l) - d)) << 64) / d) + 1;
    shift1 = l < 1 ? l : 1;
    shift2 = l > 1 ? l - 1 : 0;
  }
  DEBLURFAST_HOST_DEVICE int64_t div(int64_t n) const {
    const uint64_t u = static_cast<uint64_t>(n);
#if defined(__CUDA_ARCH__)
    const uint64_t t = __umul64hi(m, u);
#else
    const uint64_t t = static_cast<uint64_t>((static_cast<unsigned __int128>(m) * u) >> 64);
#endif
    return static_cast<int64_t>((t + ((u - t) >> shift1)) >> shift2);
  }
  DEBLURFAST_HOST_DEVICE int64_t mod(int64_t n) const { return n - div(n) * static_cast<int64_t>(d); }
};

DEBLURFAST_HOST_DEVICE float floor_acc(float v) { return floorf(v); }
DEBLURFAST_HOST_DEVICE double floor_acc(double v) { return floor(v); }

// *p += v: atomicAdd on the device; a plain add on the host, where the
// emulation runs the items one at a time.
template <typename A>
DEBLURFAST_HOST_DEVICE void atomic_add(A* p, A v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;
#endif
}

// v[0..N) = p[0..N) from memory aligned to N elements (the caller guarantees
// it): on the device as 16-byte vector loads through the read-only path.
template <int N, typename A>
DEBLURFAST_HOST_DEVICE void load_aligned(const A* __restrict__ p, A (&v)[N]) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<A, float> && N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const float4 q = __ldg(reinterpret_cast<const float4*>(p) + i);
      v[4 * i] = q.x;
      v[4 * i + 1] = q.y;
      v[4 * i + 2] = q.z;
      v[4 * i + 3] = q.w;
    }
  } else if constexpr (std::is_same_v<A, double> && N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const double2 q = __ldg(reinterpret_cast<const double2*>(p) + i);
      v[2 * i] = q.x;
      v[2 * i + 1] = q.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = p[i];
  }
#else
  for (int i = 0; i < N; ++i) v[i] = p[i];
#endif
}

template <typename F>
__global__ void __launch_bounds__(kThreads) grid_stride_kernel(const F f, const int64_t total) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x)
    f(idx);
}

inline int sm_count() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 108;
  return sms;
}

// Launches items [0, total) of f on `stream`.
struct DeviceRunner {
  cudaStream_t stream;
  template <typename F>
  cudaError_t operator()(const F& f, int64_t total) const {
    if (total <= 0) return cudaSuccess;
    const int64_t cap = int64_t(sm_count()) * 32;  // grid-stride beyond a few waves
    const int64_t blocks = std::max<int64_t>(1, std::min((total + kThreads - 1) / kThreads, cap));
    grid_stride_kernel<F><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(f, total);
    return cudaGetLastError();
  }
};

// Runs items [0, total) of f in a host loop (the CPU emulation of a launch).
struct HostRunner {
  template <typename F>
  cudaError_t operator()(const F& f, int64_t total) const {
    for (int64_t idx = 0; idx < total; ++idx) f(idx);
    return cudaSuccess;
  }
};

template <typename T>
struct Type {
  using type = T;
};

// Calls f(Type<T>{}) for the element type named by dtype.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(Type<float>{});
    case DType::Float64: return f(Type<double>{});
    case DType::Float16: return f(Type<__half>{});
    case DType::BFloat16: return f(Type<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace deblurfast
