// dynamic_filter2d on CUDA (ops.md §2): forward and backward for
// float32/float64/float16/bfloat16, accumulating in float32 (float64 for
// float64). Pure CUDA: no torch header, so CI compiles it with `nvcc -c`.
//
// One thread owns one pixel of one (n, group) and a chunk of the group's
// channels: it loads the pixel's k*k taps once (softmax in registers), then
// streams the chunk's channels. Chunks exist only to fill the GPU when images
// are small; at 720p one chunk holds the whole group, so taps are read once.
// Backward: one kernel per pixel for grad_kernel (a reduction over the group's
// channels, no atomics), then a gather kernel for grad_input (no atomics), so
// results are deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/launch.h"

namespace deblurfast {
namespace {

constexpr int kThreads = 256;

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

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }

// KS > 0: kernel size known at compile time (loops unroll, taps in
// registers); KS == 0: any odd size up to kDynamicFilter2dMaxKernelSize.
template <int KS>
struct Taps {
  static constexpr int kMax = KS > 0 ? KS : kDynamicFilter2dMaxKernelSize;
  // Unroll tap loops for the fixed sizes only; the generic variant keeps its loops.
  static constexpr int kUnroll = KS > 0 ? kMax * kMax : 1;
  __device__ __forceinline__ static int size(const DynamicFilter2dShape& s) {
    return KS > 0 ? KS : static_cast<int>(s.kernel_size);
  }
};

template <typename A>
__device__ __forceinline__ void softmax_inplace(A* w, int K2) {
  A m = w[0];
  for (int t = 1; t < K2; ++t) m = w[t] > m ? w[t] : m;
  A sum = 0;
  for (int t = 0; t < K2; ++t) {
    w[t] = exp_acc(w[t] - m);
    sum += w[t];
  }
  const A inv = A(1) / sum;
  for (int t = 0; t < K2; ++t) w[t] *= inv;
}

// Per pixel (h, w): in-plane offset of the sample each tap reads, -1 for zero
// (32-bit: the launchers require H*W < 2^31).
template <int KS>
__device__ __forceinline__ void sample_offsets(const DynamicFilter2dShape& s, int64_t h, int64_t w, int32_t* off) {
  const int k = Taps<KS>::size(s);
  int32_t cols[Taps<KS>::kMax];
#pragma unroll Taps<KS>::kUnroll
  for (int j = 0; j < Taps<KS>::kMax; ++j)
    if (j < k) cols[j] = static_cast<int32_t>(pad_source(w + j * s.dilation - s.pad, s.W, s.mode));
#pragma unroll Taps<KS>::kUnroll
  for (int i = 0; i < Taps<KS>::kMax; ++i) {
    if (i >= k) break;
    const int32_t r = static_cast<int32_t>(pad_source(h + i * s.dilation - s.pad, s.H, s.mode));
#pragma unroll Taps<KS>::kUnroll
    for (int j = 0; j < Taps<KS>::kMax; ++j)
      if (j < k) off[i * k + j] = (r < 0 || cols[j] < 0) ? -1 : r * static_cast<int32_t>(s.W) + cols[j];
  }
}

struct Work {
  int64_t chunk_size;  // channels per thread
  int64_t chunks;      // chunks per group
  int64_t total;       // threads' work items
};

// Grid-stride item -> (n, g, chunk, pixel); the pixel varies fastest so a
// warp reads consecutive addresses.
struct Item {
  int64_t n, g, chunk, pixel;
  __device__ __forceinline__ Item(int64_t idx, const DynamicFilter2dShape& s, int64_t chunks) {
    const int64_t HW = s.H * s.W;
    pixel = idx % HW;
    const int64_t rest = idx / HW;
    chunk = rest % chunks;
    const int64_t ng = rest / chunks;
    n = ng / s.groups;
    g = ng % s.groups;
  }
};

template <typename T, int KS>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, const T* __restrict__ kern, T* __restrict__ out,
                   const DynamicFilter2dShape s, const Work work) {
  using A = acc_t<T>;
  constexpr int kMax2 = Taps<KS>::kMax * Taps<KS>::kMax;
  const int K2 = Taps<KS>::size(s) * Taps<KS>::size(s);
  const int64_t HW = s.H * s.W, Cg = s.C / s.groups;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < work.total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const Item it(idx, s, work.chunks);
    A wt[kMax2];
    int32_t off[kMax2];
    const T* kp = kern + (it.n * s.groups + it.g) * K2 * HW + it.pixel;
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < kMax2; ++t)
      if (t < K2) wt[t] = to_acc(kp[t * HW]);
    if (s.softmax) softmax_inplace(wt, K2);
    sample_offsets<KS>(s, it.pixel / s.W, it.pixel % s.W, off);
    const int64_t c0 = it.g * Cg + it.chunk * work.chunk_size;
    const int64_t c1 = min64(c0 + work.chunk_size, (it.g + 1) * Cg);
    for (int64_t c = c0; c < c1; ++c) {
      const T* xc = x + (it.n * s.C + c) * HW;
      A acc = 0;
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < kMax2; ++t)
        if (t < K2 && off[t] >= 0) acc += wt[t] * to_acc(xc[off[t]]);
      out[(it.n * s.C + c) * HW + it.pixel] = from_acc<T>(acc);
    }
  }
}

// One thread per (n, g, pixel): grad_kernel = d softmax( sum over the group's
// channels of grad_out * sample ), and the normalized taps for grad_input.
template <typename T, int KS>
__global__ void __launch_bounds__(kThreads)
    kernel_grad_kernel(const T* __restrict__ grad_out, const T* __restrict__ x, const T* __restrict__ kern,
                       T* __restrict__ grad_kernel, acc_t<T>* __restrict__ probs, const DynamicFilter2dShape s,
                       const int64_t total) {
  using A = acc_t<T>;
  constexpr int kMax2 = Taps<KS>::kMax * Taps<KS>::kMax;
  const int K2 = Taps<KS>::size(s) * Taps<KS>::size(s);
  const int64_t HW = s.H * s.W, Cg = s.C / s.groups;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pixel = idx % HW, ng = idx / HW, n = ng / s.groups, g = ng % s.groups;
    const int64_t tap0 = ng * K2 * HW + pixel;  // [n, g*K2, pixel]
    A p[kMax2];
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < kMax2; ++t)
      if (t < K2) p[t] = to_acc(kern[tap0 + t * HW]);
    if (s.softmax) softmax_inplace(p, K2);
    if (probs != nullptr) {
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < kMax2; ++t)
        if (t < K2) probs[tap0 + t * HW] = p[t];
    }
    if (grad_kernel == nullptr) continue;
    int32_t off[kMax2];
    sample_offsets<KS>(s, pixel / s.W, pixel % s.W, off);
    A gw[kMax2];
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < kMax2; ++t) gw[t] = 0;
    for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
      const int64_t plane = (n * s.C + c) * HW;
      const A go = to_acc(grad_out[plane + pixel]);
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < kMax2; ++t)
        if (t < K2 && off[t] >= 0) gw[t] += go * to_acc(x[plane + off[t]]);
    }
    if (s.softmax) {
      A dot = 0;
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < kMax2; ++t)
        if (t < K2) dot += p[t] * gw[t];
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < kMax2; ++t)
        if (t < K2) gw[t] = p[t] * (gw[t] - dot);
    }
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < kMax2; ++t)
      if (t < K2) grad_kernel[tap0 + t * HW] = from_acc<T>(gw[t]);
  }
}

// grad_input of one input pixel (y, x) for channels [c0, c1) when the pixel
// lies in the border band: gather through every padding preimage. Kept out of
// line so the interior fast path keeps its registers.
template <typename T, typename P>
__device__ __noinline__ void input_grad_border(const T* __restrict__ grad_out, const P* __restrict__ tp,
                                               T* __restrict__ grad_in, const DynamicFilter2dShape& s, int64_t n,
                                               int64_t c0, int64_t c1, int64_t y, int64_t xcol) {
  using A = acc_t<T>;
  const int k = static_cast<int>(s.kernel_size);
  const int64_t HW = s.H * s.W;
  const Preimages rows = pad_preimages(y, s.H, s.pad, s.mode);
  const Preimages cols = pad_preimages(xcol, s.W, s.pad, s.mode);
  for (int64_t c = c0; c < c1; ++c) {
    const T* goc = grad_out + (n * s.C + c) * HW;
    A acc = 0;
    for (int ri = 0; ri < rows.n; ++ri)
      for (int64_t qy = rows.lo[ri]; qy <= rows.hi[ri]; ++qy)
        for (int i = 0; i < k; ++i) {
          const int64_t h = qy + s.pad - i * s.dilation;  // output row whose tap row i read qy
          if (h < 0 || h >= s.H) continue;
          for (int ci = 0; ci < cols.n; ++ci)
            for (int64_t qx = cols.lo[ci]; qx <= cols.hi[ci]; ++qx)
              for (int j = 0; j < k; ++j) {
                const int64_t w = qx + s.pad - j * s.dilation;
                if (w < 0 || w >= s.W) continue;
                acc += to_acc(tp[(i * k + j) * HW + h * s.W + w]) * to_acc(goc[h * s.W + w]);
              }
        }
    grad_in[(n * s.C + c) * HW + y * s.W + xcol] = from_acc<T>(acc);
  }
}

// One thread per (n, g, input pixel, channel chunk): grad_input gathers
// tap * grad_out from every output pixel that read this one. Pixels away from
// the border have one preimage and take the register fast path.
template <typename T, typename P, int KS>
__global__ void __launch_bounds__(kThreads)
    input_grad_kernel(const T* __restrict__ grad_out, const P* __restrict__ taps, T* __restrict__ grad_in,
                      const DynamicFilter2dShape s, const Work work) {
  using A = acc_t<T>;
  constexpr int kMax2 = Taps<KS>::kMax * Taps<KS>::kMax;
  const int k = Taps<KS>::size(s), K2 = k * k;
  const int64_t HW = s.H * s.W, Cg = s.C / s.groups;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < work.total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const Item it(idx, s, work.chunks);
    const int64_t y = it.pixel / s.W, xcol = it.pixel % s.W;
    const P* tp = taps + (it.n * s.groups + it.g) * K2 * HW;
    const int64_t c0 = it.g * Cg + it.chunk * work.chunk_size;
    const int64_t c1 = min64(c0 + work.chunk_size, (it.g + 1) * Cg);
    if (!pad_is_interior(y, s.H, s.pad, s.mode) || !pad_is_interior(xcol, s.W, s.pad, s.mode)) {
      input_grad_border(grad_out, tp, grad_in, s, it.n, c0, c1, y, xcol);
      continue;
    }
    A wt[kMax2];
    int32_t off[kMax2];
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < kMax2; ++t) {
      if (t >= K2) break;
      const int64_t h = y + s.pad - (t / k) * s.dilation, w = xcol + s.pad - (t % k) * s.dilation;
      const bool valid = h >= 0 && h < s.H && w >= 0 && w < s.W;
      off[t] = valid ? static_cast<int32_t>(h * s.W + w) : -1;
      wt[t] = valid ? to_acc(tp[t * HW + off[t]]) : A(0);
    }
    for (int64_t c = c0; c < c1; ++c) {
      const T* goc = grad_out + (it.n * s.C + c) * HW;
      A acc = 0;
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < kMax2; ++t)
        if (t < K2 && off[t] >= 0) acc += wt[t] * to_acc(goc[off[t]]);
      grad_in[(it.n * s.C + c) * HW + it.pixel] = from_acc<T>(acc);
    }
  }
}

int sm_count() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 108;
  return sms;
}

int64_t grid_blocks(int64_t total) {
  const int64_t cap = int64_t(sm_count()) * 32;  // grid-stride beyond a few waves
  return std::max<int64_t>(1, std::min((total + kThreads - 1) / kThreads, cap));
}

// Split each group's channels so that at least ~4 threads per SM core slot
// exist; one chunk when the image alone is big enough.
Work channel_chunks(const DynamicFilter2dShape& s) {
  const int64_t pixels = s.N * s.groups * s.H * s.W, Cg = s.C / s.groups;
  const int64_t target = int64_t(sm_count()) * 2048 * 4;
  int64_t chunks = std::min<int64_t>(Cg, std::max<int64_t>(1, (target + pixels - 1) / std::max<int64_t>(pixels, 1)));
  const int64_t chunk_size = (Cg + chunks - 1) / chunks;
  chunks = (Cg + chunk_size - 1) / chunk_size;
  return {chunk_size, chunks, pixels * chunks};
}

template <typename T>
struct Type {
  using type = T;
};

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

template <typename F>
cudaError_t dispatch_kernel_size(int64_t k, F&& f) {
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default:
      if (k % 2 == 1 && k <= kDynamicFilter2dMaxKernelSize) return f(std::integral_constant<int, 0>{});
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t dynamic_filter2d_forward_cuda(DType dtype, const void* input, const void* kernel, void* out,
                                          const DynamicFilter2dShape& s, cudaStream_t stream) {
  if (s.N * s.C * s.H * s.W == 0) return cudaSuccess;
  const Work work = channel_chunks(s);
  return dispatch_dtype(dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    return dispatch_kernel_size(s.kernel_size, [&](auto ks) {
      forward_kernel<T, decltype(ks)::value><<<grid_blocks(work.total), kThreads, 0, stream>>>(
          static_cast<const T*>(input), static_cast<const T*>(kernel), static_cast<T*>(out), s, work);
      return cudaGetLastError();
    });
  });
}

size_t dynamic_filter2d_backward_workspace(DType dtype, const DynamicFilter2dShape& s, bool need_grad_input) {
  if (!s.softmax || !need_grad_input) return 0;
  const size_t elem = dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  return elem * size_t(s.N * s.groups * s.taps() * s.H * s.W);
}

cudaError_t dynamic_filter2d_backward_cuda(DType dtype, const void* grad_out, const void* input, const void* kernel,
                                           void* grad_input, void* grad_kernel, void* workspace,
                                           const DynamicFilter2dShape& s, cudaStream_t stream) {
  if (s.N * s.C * s.H * s.W == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    using A = acc_t<T>;
    return dispatch_kernel_size(s.kernel_size, [&](auto ks) {
      constexpr int KS = decltype(ks)::value;
      A* probs = (grad_input != nullptr && s.softmax) ? static_cast<A*>(workspace) : nullptr;
      if (grad_kernel != nullptr || probs != nullptr) {
        const int64_t total = s.N * s.groups * s.H * s.W;
        kernel_grad_kernel<T, KS><<<grid_blocks(total), kThreads, 0, stream>>>(
            static_cast<const T*>(grad_out), static_cast<const T*>(input), static_cast<const T*>(kernel),
            static_cast<T*>(grad_kernel), probs, s, total);
        if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
      }
      if (grad_input == nullptr) return cudaSuccess;
      const Work work = channel_chunks(s);
      if (probs != nullptr) {
        input_grad_kernel<T, A, KS><<<grid_blocks(work.total), kThreads, 0, stream>>>(
            static_cast<const T*>(grad_out), probs, static_cast<T*>(grad_input), s, work);
      } else {
        input_grad_kernel<T, T, KS><<<grid_blocks(work.total), kThreads, 0, stream>>>(
            static_cast<const T*>(grad_out), static_cast<const T*>(kernel), static_cast<T*>(grad_input), s, work);
      }
      return cudaGetLastError();
    });
  });
}

}  // namespace deblurfast
