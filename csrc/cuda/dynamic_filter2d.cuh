// dynamic_filter2d CUDA kernels (ops.md §2) as functors: forward and backward
// for float32/float64/float16/bfloat16, accumulating in float32 (float64 for
// float64). Instantiated for the GPU by dynamic_filter2d_kernel.cu and for the
// host by the CPU emulation in tests/cuda_emulation. Pure CUDA, no torch.
//
// One work item owns one pixel of one (n, group) and a chunk of the group's
// channels: it loads the pixel's k*k taps once (softmax in registers), then
// streams the chunk's channels. Chunks exist only to fill the GPU when images
// are small; at 720p one chunk holds the whole group, so taps are read once.
// Backward: one item per pixel for grad_kernel (a reduction over the group's
// channels), then a gather for grad_input; no atomics, so results are
// deterministic.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dynamic_filter2d.h"
#include "cuda/grid.cuh"

namespace deblurfast {
namespace cuda {
namespace dynamic_filter2d {

// Largest kernel_size the kernels take (taps live in registers / local memory).
constexpr int kMaxKernelSize = 15;

// KS > 0: kernel size known at compile time (loops unroll, taps in
// registers); KS == 0: any odd size up to kMaxKernelSize.
template <int KS>
struct Taps {
  static constexpr int kMax = KS > 0 ? KS : kMaxKernelSize;
  static constexpr int kMax2 = kMax * kMax;
  // Unroll tap loops for the fixed sizes only; the generic variant keeps its loops.
  static constexpr int kUnroll = KS > 0 ? kMax2 : 1;
  DEBLURFAST_HOST_DEVICE static int size(const DynamicFilter2dShape& s) {
    return KS > 0 ? KS : static_cast<int>(s.kernel_size);
  }
};

struct Work {
  int64_t chunk_size;  // channels per item
  int64_t chunks;      // chunks per group
  int64_t total;       // items
};

// Split each group's channels into chunks so that there are at least
// `min_items` items; one chunk when the image alone gives that many.
inline Work channel_chunks(const DynamicFilter2dShape& s, int64_t min_items) {
  const int64_t pixels = s.N * s.groups * s.H * s.W, Cg = s.C / s.groups;
  int64_t chunks = (min_items + pixels - 1) / (pixels > 0 ? pixels : 1);
  chunks = chunks < 1 ? 1 : (chunks > Cg ? Cg : chunks);
  const int64_t chunk_size = Cg > 0 ? (Cg + chunks - 1) / chunks : 1;
  chunks = Cg > 0 ? (Cg + chunk_size - 1) / chunk_size : 1;
  return {chunk_size, chunks, pixels * chunks};
}

// Item index -> (n, g, chunk, pixel); the pixel varies fastest so a warp reads
// consecutive addresses.
struct Item {
  int64_t n, g, chunk, pixel;
  DEBLURFAST_HOST_DEVICE Item(int64_t idx, const DynamicFilter2dShape& s, int64_t chunks) {
    const int64_t HW = s.H * s.W;
    pixel = idx % HW;
    const int64_t rest = idx / HW;
    chunk = rest % chunks;
    const int64_t ng = rest / chunks;
    n = ng / s.groups;
    g = ng % s.groups;
  }
};

// Softmax over the K2 taps held in w (compile-time bounds keep w in registers).
template <int KS, typename A>
DEBLURFAST_HOST_DEVICE void softmax_inplace(A* w, int K2) {
  A m = w[0];
#pragma unroll Taps<KS>::kUnroll
  for (int t = 1; t < Taps<KS>::kMax2; ++t)
    if (t < K2) m = w[t] > m ? w[t] : m;
  A sum = 0;
#pragma unroll Taps<KS>::kUnroll
  for (int t = 0; t < Taps<KS>::kMax2; ++t) {
    if (t < K2) {
      w[t] = exp_acc(w[t] - m);
      sum += w[t];
    }
  }
  const A inv = A(1) / sum;
#pragma unroll Taps<KS>::kUnroll
  for (int t = 0; t < Taps<KS>::kMax2; ++t)
    if (t < K2) w[t] *= inv;
}

// In-plane offset of the sample each tap of pixel (h, w) reads, -1 for zero
// (32-bit: the launchers require H*W < 2^31).
template <int KS>
DEBLURFAST_HOST_DEVICE void sample_offsets(const DynamicFilter2dShape& s, int64_t h, int64_t w, int32_t* off) {
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

template <typename T, int KS>
struct Forward {
  const T* __restrict__ x;     // [N, C, H, W]
  const T* __restrict__ kern;  // [N, G*K2, H, W]
  T* __restrict__ out;         // [N, C, H, W]
  DynamicFilter2dShape s;
  Work work;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    const int K2 = Taps<KS>::size(s) * Taps<KS>::size(s);
    const int64_t HW = s.H * s.W, Cg = s.C / s.groups;
    const Item it(idx, s, work.chunks);
    A wt[Taps<KS>::kMax2];
    int32_t off[Taps<KS>::kMax2];
    const T* kp = kern + (it.n * s.groups + it.g) * K2 * HW + it.pixel;
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < Taps<KS>::kMax2; ++t)
      if (t < K2) wt[t] = to_acc(kp[t * HW]);
    if (s.softmax) softmax_inplace<KS>(wt, K2);
    sample_offsets<KS>(s, it.pixel / s.W, it.pixel % s.W, off);
    const int64_t c0 = it.g * Cg + it.chunk * work.chunk_size;
    const int64_t c1 = min64(c0 + work.chunk_size, (it.g + 1) * Cg);
    for (int64_t c = c0; c < c1; ++c) {
      const T* xc = x + (it.n * s.C + c) * HW;
      A acc = 0;
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < Taps<KS>::kMax2; ++t)
        if (t < K2 && off[t] >= 0) acc += wt[t] * to_acc(xc[off[t]]);
      out[(it.n * s.C + c) * HW + it.pixel] = from_acc<T>(acc);
    }
  }
};

// One item per (n, g, pixel): grad_kernel = d softmax(sum over the group's
// channels of grad_out * sample), and the normalized taps for grad_input.
template <typename T, int KS>
struct KernelGrad {
  const T* __restrict__ grad_out;  // [N, C, H, W]
  const T* __restrict__ x;         // [N, C, H, W]
  const T* __restrict__ kern;      // [N, G*K2, H, W]
  T* __restrict__ grad_kernel;     // [N, G*K2, H, W] or null
  acc_t<T>* __restrict__ probs;    // [N, G*K2, H, W] normalized taps, or null
  DynamicFilter2dShape s;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    const int K2 = Taps<KS>::size(s) * Taps<KS>::size(s);
    const int64_t HW = s.H * s.W, Cg = s.C / s.groups;
    const int64_t pixel = idx % HW, ng = idx / HW, n = ng / s.groups, g = ng % s.groups;
    const int64_t tap0 = ng * K2 * HW + pixel;  // [n, g*K2, pixel]
    A p[Taps<KS>::kMax2];
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < Taps<KS>::kMax2; ++t)
      if (t < K2) p[t] = to_acc(kern[tap0 + t * HW]);
    if (s.softmax) softmax_inplace<KS>(p, K2);
    if (probs != nullptr) {
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < Taps<KS>::kMax2; ++t)
        if (t < K2) probs[tap0 + t * HW] = p[t];
    }
    if (grad_kernel == nullptr) return;
    int32_t off[Taps<KS>::kMax2];
    sample_offsets<KS>(s, pixel / s.W, pixel % s.W, off);
    A gw[Taps<KS>::kMax2];
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < Taps<KS>::kMax2; ++t) gw[t] = 0;
    for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
      const int64_t plane = (n * s.C + c) * HW;
      const A go = to_acc(grad_out[plane + pixel]);
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < Taps<KS>::kMax2; ++t)
        if (t < K2 && off[t] >= 0) gw[t] += go * to_acc(x[plane + off[t]]);
    }
    if (s.softmax) {  // d softmax: p * (gw - sum_t p * gw)
      A dot = 0;
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < Taps<KS>::kMax2; ++t)
        if (t < K2) dot += p[t] * gw[t];
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < Taps<KS>::kMax2; ++t)
        if (t < K2) gw[t] = p[t] * (gw[t] - dot);
    }
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < Taps<KS>::kMax2; ++t)
      if (t < K2) grad_kernel[tap0 + t * HW] = from_acc<T>(gw[t]);
  }
};

// grad_input of input pixel (y, x) for channels [c0, c1) when the pixel lies
// in the border band: gather through every padding preimage. Kept out of line
// so the interior fast path keeps its registers.
template <typename T, typename P>
__host__ __device__ __noinline__ void input_grad_border(const T* __restrict__ grad_out, const P* __restrict__ tp,
                                                        T* __restrict__ grad_in, const DynamicFilter2dShape s,
                                                        int64_t n, int64_t c0, int64_t c1, int64_t y, int64_t xcol) {
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

// One item per (n, g, input pixel, channel chunk): grad_input gathers
// tap * grad_out from every output pixel that read this one. Pixels away from
// the border have one preimage and take the register fast path.
template <typename T, typename P, int KS>
struct InputGrad {
  const T* __restrict__ grad_out;  // [N, C, H, W]
  const P* __restrict__ taps;      // [N, G*K2, H, W], normalized
  T* __restrict__ grad_in;         // [N, C, H, W]
  DynamicFilter2dShape s;
  Work work;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    const int k = Taps<KS>::size(s), K2 = k * k;
    const int64_t HW = s.H * s.W, Cg = s.C / s.groups;
    const Item it(idx, s, work.chunks);
    const int64_t y = it.pixel / s.W, xcol = it.pixel % s.W;
    const P* tp = taps + (it.n * s.groups + it.g) * K2 * HW;
    const int64_t c0 = it.g * Cg + it.chunk * work.chunk_size;
    const int64_t c1 = min64(c0 + work.chunk_size, (it.g + 1) * Cg);
    if (!pad_is_interior(y, s.H, s.pad, s.mode) || !pad_is_interior(xcol, s.W, s.pad, s.mode)) {
      input_grad_border(grad_out, tp, grad_in, s, it.n, c0, c1, y, xcol);
      return;
    }
    A wt[Taps<KS>::kMax2];
    int32_t off[Taps<KS>::kMax2];
#pragma unroll Taps<KS>::kUnroll
    for (int t = 0; t < Taps<KS>::kMax2; ++t) {
      if (t >= K2) break;
      // output pixel whose tap t read (y, x)
      const int64_t h = y + s.pad - (t / k) * s.dilation, w = xcol + s.pad - (t % k) * s.dilation;
      const bool valid = h >= 0 && h < s.H && w >= 0 && w < s.W;
      off[t] = valid ? static_cast<int32_t>(h * s.W + w) : -1;
      wt[t] = valid ? A(to_acc(tp[t * HW + off[t]])) : A(0);
    }
    for (int64_t c = c0; c < c1; ++c) {
      const T* goc = grad_out + (it.n * s.C + c) * HW;
      A acc = 0;
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < Taps<KS>::kMax2; ++t)
        if (t < K2 && off[t] >= 0) acc += wt[t] * to_acc(goc[off[t]]);
      grad_in[(it.n * s.C + c) * HW + it.pixel] = from_acc<T>(acc);
    }
  }
};

// Calls f(std::integral_constant<int, KS>) with KS = k for the specialized
// sizes and 0 (generic) for other odd k <= kMaxKernelSize.
template <typename F>
cudaError_t dispatch_kernel_size(int64_t k, F&& f) {
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default:
      if (k % 2 == 1 && k <= kMaxKernelSize) return f(std::integral_constant<int, 0>{});
      return cudaErrorInvalidValue;
  }
}

template <typename Runner>
cudaError_t forward(const Runner& run, DType dtype, const void* input, const void* kernel, void* out,
                    const DynamicFilter2dShape& s, const Work& work) {
  if (s.N * s.C * s.H * s.W == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    return dispatch_kernel_size(s.kernel_size, [&](auto ks) {
      const Forward<T, decltype(ks)::value> f{static_cast<const T*>(input), static_cast<const T*>(kernel),
                                              static_cast<T*>(out), s, work};
      return run(f, work.total);
    });
  });
}

// Bytes of scratch the backward needs: the softmax-normalized taps in the
// accumulation type, when the input gradient is wanted.
inline size_t backward_workspace(DType dtype, const DynamicFilter2dShape& s, bool need_grad_input) {
  if (!s.softmax || !need_grad_input) return 0;
  const size_t elem = dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  return elem * size_t(s.N * s.groups * s.taps() * s.H * s.W);
}

template <typename Runner>
cudaError_t backward(const Runner& run, DType dtype, const void* grad_out, const void* input, const void* kernel,
                     void* grad_input, void* grad_kernel, void* workspace, const DynamicFilter2dShape& s,
                     const Work& work) {
  if (s.N * s.C * s.H * s.W == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    using A = acc_t<T>;
    return dispatch_kernel_size(s.kernel_size, [&](auto ks) {
      constexpr int KS = decltype(ks)::value;
      A* probs = (grad_input != nullptr && s.softmax) ? static_cast<A*>(workspace) : nullptr;
      if (grad_kernel != nullptr || probs != nullptr) {
        const KernelGrad<T, KS> f{static_cast<const T*>(grad_out), static_cast<const T*>(input),
                                  static_cast<const T*>(kernel), static_cast<T*>(grad_kernel), probs, s};
        if (cudaError_t err = run(f, s.N * s.groups * s.H * s.W); err != cudaSuccess) return err;
      }
      if (grad_input == nullptr) return cudaSuccess;
      if (probs != nullptr) {
        const InputGrad<T, A, KS> f{static_cast<const T*>(grad_out), probs, static_cast<T*>(grad_input), s, work};
        return run(f, work.total);
      }
      const InputGrad<T, T, KS> f{static_cast<const T*>(grad_out), static_cast<const T*>(kernel),
                                  static_cast<T*>(grad_input), s, work};
      return run(f, work.total);
    });
  });
}

}  // namespace dynamic_filter2d
}  // namespace cuda
}  // namespace deblurfast
