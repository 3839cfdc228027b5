// dynamic_filter2d CUDA kernels (ops.md §2) as functors: forward and backward
// for float32/float64/float16/bfloat16, accumulating in float32 (float64 for
// float64). Instantiated for the GPU by dynamic_filter2d_kernel.cu and for the
// host by the CPU emulation in tests/cuda_emulation. Pure CUDA, no torch.
//
// One work item owns one pixel of one (n, group) and a chunk of the group's
// channels: it takes the max and sum of the pixel's k*k logits once, then
// streams the chunk's channels in blocks of 8 (4 for double) held in registers,
// each tap's weight computed once per block; no per-tap register arrays, so no
// spills at k = 7. Chunks exist only to fill the GPU when images
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
  static constexpr int kUnrollRow = KS > 0 ? kMax : 1;
  DEBLURFAST_HOST_DEVICE static int size(const DynamicFilter2dShape& s) {
    return KS > 0 ? KS : static_cast<int>(s.kernel_size);
  }
};

struct Work {
  int64_t chunk_size;  // channels per item
  int64_t chunks;      // chunks per group
  int64_t total;       // items
  int64_t group_channels;  // C / groups
  DivMod by_plane, by_width, by_chunks, by_groups;  // H*W, W, chunks, groups: the items' index arithmetic
};

// Split each group's channels into chunks so that there are at least
// `min_items` items; one chunk when the image alone gives that many.
inline Work channel_chunks(const DynamicFilter2dShape& s, int64_t min_items) {
  const int64_t pixels = s.N * s.groups * s.H * s.W, Cg = s.C / s.groups;
  int64_t chunks = (min_items + pixels - 1) / (pixels > 0 ? pixels : 1);
  chunks = chunks < 1 ? 1 : (chunks > Cg ? Cg : chunks);
  const int64_t chunk_size = Cg > 0 ? (Cg + chunks - 1) / chunks : 1;
  chunks = Cg > 0 ? (Cg + chunk_size - 1) / chunk_size : 1;
  return {chunk_size, chunks, pixels * chunks, Cg, DivMod(s.H * s.W), DivMod(s.W), DivMod(chunks), DivMod(s.groups)};
}

// Item index -> (n, g, chunk, pixel); the pixel varies fastest so a warp reads
// consecutive addresses.
struct Item {
  int64_t n, g, chunk, pixel, y, x;
  DEBLURFAST_HOST_DEVICE Item(int64_t idx, const Work& work) {
    const int64_t rest = work.by_plane.div(idx), ng = work.by_chunks.div(rest);
    pixel = idx - rest * static_cast<int64_t>(work.by_plane.d);
    chunk = rest - ng * work.chunks;
    n = work.by_groups.div(ng);
    g = ng - n * static_cast<int64_t>(work.by_groups.d);
    y = work.by_width.div(pixel);
    x = pixel - y * static_cast<int64_t>(work.by_width.d);
  }
};

// Channels one item accumulates at a time: their sums live in registers, and
// each tap's weight and sample offset are computed once per block of them.
template <typename A>
struct ChannelBlock {
  static constexpr int kSize = sizeof(A) == 8 ? 4 : 8;
};

// Max of the pixel's K2 logits and 1 / sum of their exponentials (max 0 and
// scale 1 without softmax): tap t's weight is then tap_weight(logit_t).
template <typename A>
struct TapNorm {
  A max = 0, inv = 1;
  bool softmax = false;
  DEBLURFAST_HOST_DEVICE A weight(A logit) const { return softmax ? exp_acc(logit - max) * inv : logit; }
};

template <int KS, typename T>
DEBLURFAST_HOST_DEVICE TapNorm<acc_t<T>> tap_norm(const T* kp, int64_t HW, int K2, bool softmax) {
  using A = acc_t<T>;
  TapNorm<A> n;
  n.softmax = softmax;
  if (!softmax) return n;
  n.max = to_acc(kp[0]);
#pragma unroll Taps<KS>::kUnroll
  for (int t = 1; t < Taps<KS>::kMax2; ++t)
    if (t < K2) n.max = to_acc(kp[t * HW]) > n.max ? to_acc(kp[t * HW]) : n.max;
  A sum = 0;
#pragma unroll Taps<KS>::kUnroll
  for (int t = 0; t < Taps<KS>::kMax2; ++t)
    if (t < K2) sum += exp_acc(to_acc(kp[t * HW]) - n.max);
  n.inv = A(1) / sum;
  return n;
}

// Rows and columns the taps of pixel (h, w) read, -1 for zero padding
// (32-bit: the launchers require H*W < 2^31). Fixed sizes keep all k of each
// in registers; the generic variant computes tap t's on demand (at()).
template <int KS>
struct SampleGrid {
  int32_t rows[KS > 0 ? KS : 1], cols[KS > 0 ? KS : 1];
  int64_t h, w;

  DEBLURFAST_HOST_DEVICE SampleGrid(const DynamicFilter2dShape& s, int64_t h_, int64_t w_) : h(h_), w(w_) {
    if constexpr (KS > 0) {
#pragma unroll
      for (int i = 0; i < KS; ++i) {
        rows[i] = static_cast<int32_t>(pad_source(h + i * s.dilation - s.pad, s.H, s.mode));
        cols[i] = static_cast<int32_t>(pad_source(w + i * s.dilation - s.pad, s.W, s.mode));
      }
    }
  }
  // Row tap row i reads (computed: i may be a loop variable), -1 for zero.
  DEBLURFAST_HOST_DEVICE int32_t row(const DynamicFilter2dShape& s, int i) const {
    return static_cast<int32_t>(pad_source(h + i * s.dilation - s.pad, s.H, s.mode));
  }
  // Column tap column j reads (from registers for fixed sizes: j must be unrolled), -1 for zero.
  DEBLURFAST_HOST_DEVICE int32_t col(const DynamicFilter2dShape& s, int j) const {
    if constexpr (KS > 0) {
      return cols[j];
    } else {
      return static_cast<int32_t>(pad_source(w + j * s.dilation - s.pad, s.W, s.mode));
    }
  }
  // In-plane offset of the sample tap (i, j) reads, -1 for zero (i and j unrolled for fixed sizes).
  DEBLURFAST_HOST_DEVICE int32_t at(const DynamicFilter2dShape& s, int i, int j) const {
    int32_t r;
    if constexpr (KS > 0) {
      r = rows[i];
    } else {
      r = row(s, i);
    }
    const int32_t c = col(s, j);
    return (r < 0 || c < 0) ? -1 : r * static_cast<int32_t>(s.W) + c;
  }
};

template <typename T, int KS>
struct Forward {
  const T* __restrict__ x;     // [N, C, H, W]
  const T* __restrict__ kern;  // [N, G*K2, H, W]
  T* __restrict__ out;         // [N, C, H, W]
  DynamicFilter2dShape s;
  Work work;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    constexpr int CB = ChannelBlock<A>::kSize;
    const int k = Taps<KS>::size(s), K2 = k * k;
    const int64_t HW = s.H * s.W, Cg = work.group_channels;
    const Item it(idx, work);
    const T* kp = kern + (it.n * s.groups + it.g) * K2 * HW + it.pixel;
    const TapNorm<A> norm = tap_norm<KS>(kp, HW, K2, s.softmax);
    const SampleGrid<KS> grid(s, it.y, it.x);
    const int64_t c0 = it.g * Cg + it.chunk * work.chunk_size;
    const int64_t c1 = min64(c0 + work.chunk_size, (it.g + 1) * Cg);
    for (int64_t cb = c0; cb < c1; cb += CB) {
      const int nc = static_cast<int>(min64(CB, c1 - cb));
      const T* xc = x + (it.n * s.C + cb) * HW;
      A acc[CB];
#pragma unroll
      for (int c = 0; c < CB; ++c) acc[c] = 0;
      // tap rows in a loop, columns unrolled: the code and live registers stay those of one row
#pragma unroll 1
      for (int i = 0; i < k; ++i) {
        const int32_t r = grid.row(s, i);
        if (r < 0) continue;
#pragma unroll Taps<KS>::kUnrollRow
        for (int j = 0; j < Taps<KS>::kMax; ++j) {
          if (j >= k) break;
          const int32_t col = grid.col(s, j);
          if (col < 0) continue;
          const int32_t off = r * static_cast<int32_t>(s.W) + col;
          const A wt = norm.weight(to_acc(kp[(i * k + j) * HW]));
#pragma unroll
          for (int c = 0; c < CB; ++c)
            if (c < nc) acc[c] += wt * to_acc(xc[c * HW + off]);
        }
      }
#pragma unroll
      for (int c = 0; c < CB; ++c)
        if (c < nc) out[(it.n * s.C + cb + c) * HW + it.pixel] = from_acc<T>(acc[c]);
    }
  }
};

// One item per (n, g, pixel): grad_kernel = d softmax(sum over the group's
// channels of grad_out * sample), and the normalized taps for grad_input.
// Fixed sizes hold the k*k tap gradients in registers; the generic variant
// computes one tap's at a time, twice under softmax (once for sum_t p_t g_t).
template <typename T, int KS>
struct KernelGrad {
  const T* __restrict__ grad_out;  // [N, C, H, W]
  const T* __restrict__ x;         // [N, C, H, W]
  const T* __restrict__ kern;      // [N, G*K2, H, W]
  T* __restrict__ grad_kernel;     // [N, G*K2, H, W] or null
  acc_t<T>* __restrict__ probs;    // [N, G*K2, H, W] normalized taps, or null
  DynamicFilter2dShape s;
  Work work;  // its divisors and group_channels (the items are (n, g, pixel), no chunks)

  // sum over the group's channels of grad_out * the sample tap (i, j) reads
  DEBLURFAST_HOST_DEVICE acc_t<T> tap_grad(const SampleGrid<KS>& grid, int64_t plane0, int64_t Cg, int64_t pixel,
                                           int i, int j) const {
    using A = acc_t<T>;
    const int32_t off = grid.at(s, i, j);
    A g = 0;
    if (off < 0) return g;
    const int64_t HW = s.H * s.W;
    for (int64_t c = 0; c < Cg; ++c) g += to_acc(grad_out[plane0 + c * HW + pixel]) * to_acc(x[plane0 + c * HW + off]);
    return g;
  }

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    const int k = Taps<KS>::size(s), K2 = k * k;
    const int64_t HW = s.H * s.W, Cg = work.group_channels;
    const int64_t ng = work.by_plane.div(idx), n = work.by_groups.div(ng), g = ng - n * s.groups;
    const int64_t pixel = idx - ng * HW, y = work.by_width.div(pixel);
    const int64_t tap0 = ng * K2 * HW + pixel;  // [n, g*K2, pixel]
    const TapNorm<A> norm = tap_norm<KS>(kern + tap0, HW, K2, s.softmax);
    if (probs != nullptr) {
#pragma unroll Taps<KS>::kUnroll
      for (int t = 0; t < Taps<KS>::kMax2; ++t)
        if (t < K2) probs[tap0 + t * HW] = norm.weight(to_acc(kern[tap0 + t * HW]));
    }
    if (grad_kernel == nullptr) return;
    const SampleGrid<KS> grid(s, y, pixel - y * s.W);
    const int64_t plane0 = (n * s.C + g * Cg) * HW;
    if constexpr (KS > 0) {
      A gw[KS * KS];
#pragma unroll
      for (int t = 0; t < KS * KS; ++t) gw[t] = 0;
      const SampleGrid<KS>& sg = grid;
      for (int64_t c = 0; c < Cg; ++c) {  // channels outer: grad_out read once, offsets from registers
        const int64_t plane = plane0 + c * HW;
        const A go = to_acc(grad_out[plane + pixel]);
#pragma unroll
        for (int t = 0; t < KS * KS; ++t) {
          const int32_t off = sg.at(s, t / KS, t % KS);
          if (off >= 0) gw[t] += go * to_acc(x[plane + off]);
        }
      }
      A dot = 0;
      if (s.softmax) {  // d softmax: p * (gw - sum_t p * gw)
#pragma unroll
        for (int t = 0; t < KS * KS; ++t) dot += norm.weight(to_acc(kern[tap0 + t * HW])) * gw[t];
      }
#pragma unroll
      for (int t = 0; t < KS * KS; ++t) {
        const A v = s.softmax ? norm.weight(to_acc(kern[tap0 + t * HW])) * (gw[t] - dot) : gw[t];
        grad_kernel[tap0 + t * HW] = from_acc<T>(v);
      }
    } else {
      A dot = 0;
      if (s.softmax) {
        for (int t = 0; t < K2; ++t)
          dot += norm.weight(to_acc(kern[tap0 + t * HW])) * tap_grad(grid, plane0, Cg, pixel, t / k, t % k);
      }
      for (int t = 0; t < K2; ++t) {
        const A gt = tap_grad(grid, plane0, Cg, pixel, t / k, t % k);
        const A v = s.softmax ? norm.weight(to_acc(kern[tap0 + t * HW])) * (gt - dot) : gt;
        grad_kernel[tap0 + t * HW] = from_acc<T>(v);
      }
    }
  }
};

// bounds[i] of a Preimages interval, read with constant indices (a runtime index puts the array on the stack).
DEBLURFAST_HOST_DEVICE int interval_bound(const int64_t (&bounds)[3], int i) {
  return static_cast<int>(i == 0 ? bounds[0] : i == 1 ? bounds[1] : bounds[2]);
}

// grad_input of input pixel (y, x) for channels [c0, c1) when the pixel lies
// in the border band: gather through every padding preimage.
template <typename T, typename P>
DEBLURFAST_HOST_DEVICE void input_grad_border(const T* __restrict__ grad_out, const P* __restrict__ tp,
                                              T* __restrict__ grad_in, const DynamicFilter2dShape& s,
                                              int64_t n, int64_t c0, int64_t c1, int64_t y, int64_t xcol) {
  using A = acc_t<T>;
  // in-plane arithmetic in 32 bits (the launchers require H*W < 2^31)
  const int k = static_cast<int>(s.kernel_size), H = static_cast<int>(s.H), W = static_cast<int>(s.W);
  const int pad = static_cast<int>(s.pad), dil = static_cast<int>(s.dilation);
  const int64_t HW = s.H * s.W;
  const Preimages rows = pad_preimages(y, s.H, s.pad, s.mode);
  const Preimages cols = pad_preimages(xcol, s.W, s.pad, s.mode);
  for (int64_t c = c0; c < c1; ++c) {
    const T* goc = grad_out + (n * s.C + c) * HW;
    A acc = 0;
    // one loop over the intervals, each picked by selects: constant indices keep the Preimages in registers,
    // not on the stack, without unrolling the loop nest 9 times
    for (int ri = 0; ri < rows.n; ++ri) {
      const int qy0 = interval_bound(rows.lo, ri), qy1 = interval_bound(rows.hi, ri);
      for (int qy = qy0; qy <= qy1; ++qy)
        for (int i = 0; i < k; ++i) {
          const int h = qy + pad - i * dil;  // output row whose tap row i read qy
          if (h < 0 || h >= H) continue;
          for (int ci = 0; ci < cols.n; ++ci) {
            const int qx0 = interval_bound(cols.lo, ci), qx1 = interval_bound(cols.hi, ci);
            for (int qx = qx0; qx <= qx1; ++qx)
              for (int j = 0; j < k; ++j) {
                const int w = qx + pad - j * dil;
                if (w < 0 || w >= W) continue;
                const int off = h * W + w;
                acc += to_acc(tp[(i * k + j) * HW + off]) * to_acc(goc[off]);
              }
          }
        }
    }
    grad_in[(n * s.C + c) * HW + y * s.W + xcol] = from_acc<T>(acc);
  }
}

// One item per (n, g, input pixel, channel chunk): grad_input gathers
// tap * grad_out from every output pixel that read this one. Pixels away from
// the border have one preimage: per block of channels, each tap's weight and
// offset computed once, the sums in registers. The border band of reflect and
// replicate padding is InputGradBorder's.
template <typename T, typename P, int KS>
struct InputGrad {
  const T* __restrict__ grad_out;  // [N, C, H, W]
  const P* __restrict__ taps;      // [N, G*K2, H, W], normalized
  T* __restrict__ grad_in;         // [N, C, H, W]
  DynamicFilter2dShape s;
  Work work;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    constexpr int CB = ChannelBlock<A>::kSize;
    const int k = Taps<KS>::size(s), K2 = k * k;
    const int64_t HW = s.H * s.W, Cg = work.group_channels;
    const Item it(idx, work);
    const int64_t y = it.y, xcol = it.x;
    const P* tp = taps + (it.n * s.groups + it.g) * K2 * HW;
    const int64_t c0 = it.g * Cg + it.chunk * work.chunk_size;
    const int64_t c1 = min64(c0 + work.chunk_size, (it.g + 1) * Cg);
    if (!pad_is_interior(y, s.H, s.pad, s.mode) || !pad_is_interior(xcol, s.W, s.pad, s.mode))
      return;  // InputGradBorder's
    for (int64_t cb = c0; cb < c1; cb += CB) {
      const int nc = static_cast<int>(min64(CB, c1 - cb));
      const T* goc = grad_out + (it.n * s.C + cb) * HW;
      A acc[CB];
#pragma unroll
      for (int c = 0; c < CB; ++c) acc[c] = 0;
      // tap rows in a loop, columns unrolled (as in Forward)
#pragma unroll 1
      for (int i = 0; i < k; ++i) {
        const int64_t h = y + s.pad - i * s.dilation;  // output row whose tap row i read row y
        if (h < 0 || h >= s.H) continue;
#pragma unroll Taps<KS>::kUnrollRow
        for (int j = 0; j < Taps<KS>::kMax; ++j) {
          if (j >= k) break;
          const int64_t w = xcol + s.pad - j * s.dilation;
          if (w < 0 || w >= s.W) continue;
          const int32_t off = static_cast<int32_t>(h * s.W + w);
          const A wt = to_acc(tp[(i * k + j) * HW + off]);
#pragma unroll
          for (int c = 0; c < CB; ++c)
            if (c < nc) acc[c] += wt * to_acc(goc[c * HW + off]);
        }
      }
#pragma unroll
      for (int c = 0; c < CB; ++c)
        if (c < nc) grad_in[(it.n * s.C + cb + c) * HW + it.pixel] = from_acc<T>(acc[c]);
    }
  }
};

// InputGrad's pixels in the border band of reflect and replicate padding, a launch of their own (InputGrad's
// arguments): inlined into InputGrad, the preimage enumeration's registers made ptxas spill in every instantiation.
template <typename T, typename P>
struct InputGradBorder : InputGrad<T, P, 0> {
  static bool needed(const DynamicFilter2dShape& s) { return s.mode != PadMode::Zeros && s.pad > 0; }

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    const DynamicFilter2dShape& s = this->s;
    const Work& work = this->work;
    const Item it(idx, work);
    if (pad_is_interior(it.y, s.H, s.pad, s.mode) && pad_is_interior(it.x, s.W, s.pad, s.mode)) return;
    const int64_t K2 = s.kernel_size * s.kernel_size, Cg = work.group_channels;
    const int64_t c0 = it.g * Cg + it.chunk * work.chunk_size;
    input_grad_border(this->grad_out, this->taps + (it.n * s.groups + it.g) * K2 * s.H * s.W, this->grad_in, s,
                      it.n, c0, min64(c0 + work.chunk_size, (it.g + 1) * Cg), it.y, it.x);
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
                                  static_cast<const T*>(kernel), static_cast<T*>(grad_kernel), probs, s, work};
        if (cudaError_t err = run(f, s.N * s.groups * s.H * s.W); err != cudaSuccess) return err;
      }
      if (grad_input == nullptr) return cudaSuccess;
      auto input_grad = [&](const auto* taps) {
        using P = std::remove_cv_t<std::remove_pointer_t<decltype(taps)>>;
        const InputGrad<T, P, KS> f{static_cast<const T*>(grad_out), taps, static_cast<T*>(grad_input), s, work};
        if (cudaError_t err = run(f, work.total); err != cudaSuccess || !InputGradBorder<T, P>::needed(s)) return err;
        const InputGradBorder<T, P> b{{static_cast<const T*>(grad_out), taps, static_cast<T*>(grad_input), s, work}};
        return run(b, work.total);
      };
      return probs != nullptr ? input_grad(static_cast<const A*>(probs)) : input_grad(static_cast<const T*>(kernel));
    });
  });
}

}  // namespace dynamic_filter2d
}  // namespace cuda
}  // namespace deblurfast
