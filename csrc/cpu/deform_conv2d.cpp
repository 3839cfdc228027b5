// deform_conv2d on the CPU (ops.md §1): forward and backward, float32/float64.
//
// Work goes by tiles of output pixels of one image. For a tile of P pixels:
// the sampling geometry of every (offset group, tap, pixel) is computed once
// (4 corner offsets, the fractional parts, the mask), the modulated samples
// form a column block cols[Cin*K, P] that lives only for the tile, and a GEMM
// with the weight gives the outputs. Extra memory is a few tile buffers,
// bounded by kTileBudgetBytes whatever the image size.
//
// Without weight groups both directions go by blocks of input channels copied
// channels_last (at most kBlockBytes), so each sample's 4 corners are
// contiguous channel runs, blended, dotted and added to with vector FMAs (AVX2
// where the CPU has it). Forward: tiles in parallel, each thread with its own
// buffers, each tile's GEMM accumulated into the output in place. Backward:
// tiles in sequence, parallel inside a tile (grad_input split by channels,
// grad_offset/grad_mask by pixels, grad_weight accumulated tile after tile),
// so the result does not depend on the thread count and no atomics are
// needed. With weight groups the forward reads the planes directly and the
// backward scatters grad_input one input channel per task.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "deform_conv2d_args.h"

namespace deblurfast {
namespace {

constexpr int64_t kTileBudgetBytes = int64_t(48) << 20;  // backward: all threads' tile buffers together
constexpr int64_t kForwardTileBytes = int64_t(1) << 20;  // forward: one thread's tile buffers
constexpr int64_t kBlockedBackwardTileBytes = int64_t(4) << 20;  // channel-block backward: the tile all threads share

// Where one (offset group, tap, pixel) samples: in-plane offsets of the 4
// bilinear corners (-1: outside, reads 0), the fractional position and the mask.
template <typename T>
struct Sample {
  int64_t corner[4];  // (y0,x0) (y0,x0+1) (y0+1,x0) (y0+1,x0+1)
  T ly, lx, m;
};

template <typename T>
struct Geometry {
  const DeformConv2dShape& s;
  const T* offset;  // [N, 2*G*K, Ho, Wo] or null
  const T* mask;    // [N, G*K, Ho, Wo] or null

  // Sample of (n, g, t) at flat output pixel p.
  Sample<T> operator()(int64_t n, int64_t g, int64_t t, int64_t p) const {
    const int64_t K = s.taps(), HoWo = s.out_pixels();
    const int64_t ho = p / s.Wo, wo = p % s.Wo, i = t / s.kw, j = t % s.kw;
    Sample<T> smp;
    smp.m = mask ? mask[((n * s.offset_groups + g) * K + t) * HoWo + p] : T(1);
    T py = T(ho * s.sh - s.ph + i * s.dh), px = T(wo * s.sw - s.pw + j * s.dw);
    if (offset) {
      const T* o = offset + ((n * s.offset_groups + g) * K + t) * 2 * HoWo + p;
      py += o[0];
      px += o[HoWo];
    }
    smp.ly = smp.lx = T(0);
    std::fill(smp.corner, smp.corner + 4, int64_t(-1));
    // torchvision's rule; written so that a NaN position counts as outside.
    if (!(py > T(-1) && py < T(s.H) && px > T(-1) && px < T(s.W))) return smp;
    const T y0f = std::floor(py), x0f = std::floor(px);
    const int64_t y0 = static_cast<int64_t>(y0f), x0 = static_cast<int64_t>(x0f);
    smp.ly = py - y0f;
    smp.lx = px - x0f;
    // Without offsets positions are integers: only corner 0 is read (a zero
    // weight times an inf neighbour would otherwise give NaN).
    for (int c = 0; c < (offset ? 4 : 1); ++c) {
      const int64_t y = y0 + c / 2, x = x0 + c % 2;
      smp.corner[c] = (y >= 0 && y < s.H && x >= 0 && x < s.W) ? y * s.W + x : -1;
    }
    return smp;
  }
};

// Unmasked bilinear weights of the 4 corners.
template <typename T>
inline void corner_weights(const Sample<T>& smp, T* w) {
  w[0] = (1 - smp.ly) * (1 - smp.lx);
  w[1] = (1 - smp.ly) * smp.lx;
  w[2] = smp.ly * (1 - smp.lx);
  w[3] = smp.ly * smp.lx;
}

template <typename T>
inline T sample_value(const T* plane, const Sample<T>& smp) {
  T w[4];
  corner_weights(smp, w);
  T v = 0;
  for (int c = 0; c < 4; ++c)
    if (smp.corner[c] >= 0) v += w[c] * plane[smp.corner[c]];
  return v;
}

// Pixels per tile so that `bytes_per_pixel` times the tile, for `buffers`
// concurrent tiles, stays within the budget.
int64_t tile_pixels(int64_t bytes_per_pixel, int64_t buffers, int64_t total) {
  const int64_t p = kTileBudgetBytes / std::max<int64_t>(1, buffers * bytes_per_pixel);
  return std::max<int64_t>(1, std::min(p, total));
}

// cols[(c*K + t)*P + q] = mask * sample of channel c for channels [c0, c1).
template <typename T>
void tile_columns(const DeformConv2dShape& s, const T* xn, const Sample<T>* geo, int64_t P, int64_t c0, int64_t c1,
                  T* cols) {
  const int64_t K = s.taps(), HW = s.H * s.W, Cg = s.cin_per_offset_group();
  for (int64_t c = c0; c < c1; ++c) {
    const T* plane = xn + c * HW;
    const Sample<T>* gc = geo + (c / Cg) * K * P;
    for (int64_t tq = 0; tq < K * P; ++tq) cols[c * K * P + tq] = gc[tq].m * sample_value(plane, gc[tq]);
  }
}

// The forward's form of a Sample: the bilinear weights already times the mask, and which corners lie
// inside the image (bit c: corner c); `base` is corner 0's in-plane offset (y0 * W + x0).
template <typename T>
struct Corners {
  int64_t base;
  T w[4];
  int32_t inside;
};

constexpr int32_t kAllCorners = 15;

template <typename T>
Corners<T> corners_of(const Sample<T>& smp, int64_t W) {
  Corners<T> r;
  corner_weights(smp, r.w);
  for (T& w : r.w) w *= smp.m;
  r.inside = 0;
  r.base = 0;
  for (int c = 3; c >= 0; --c)
    if (smp.corner[c] >= 0) {
      r.inside |= 1 << c;
      r.base = smp.corner[c] - (c / 2) * W - c % 2;
    }
  return r;
}

// cols[(c*K + t)*P + q] for channels [c0, c1) from the tile's corners (geo[(g*K + t)*P + q]): the
// 4-corner read without branches where all corners are inside, the checked one near the borders.
template <typename T>
void tile_columns_fast(const DeformConv2dShape& s, const T* xn, const Corners<T>* geo, int64_t P, int64_t c0,
                       int64_t c1, T* cols) {
  const int64_t K = s.taps(), HW = s.H * s.W, Cg = s.cin_per_offset_group(), W = s.W;
  for (int64_t c = c0; c < c1; ++c) {
    const T* plane = xn + c * HW;
    const Corners<T>* gc = geo + (c / Cg) * K * P;
    T* dst = cols + c * K * P;
    for (int64_t tq = 0; tq < K * P; ++tq) {
      const Corners<T>& r = gc[tq];
      if (r.inside == kAllCorners) {
        const T* p = plane + r.base;
        dst[tq] = r.w[0] * p[0] + r.w[1] * p[1] + r.w[2] * p[W] + r.w[3] * p[W + 1];
      } else {
        T v = 0;
        for (int k = 0; k < 4; ++k)
          if (r.inside & (1 << k)) v += r.w[k] * plane[r.base + (k / 2) * W + k % 2];
        dst[tq] = v;
      }
    }
  }
}

at::Tensor wrap(const void* data, at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& opt) {
  return at::from_blob(const_cast<void*>(data), sizes, strides, opt);
}

// -- forward by channel blocks of a channels_last copy (weight groups == 1) ----------------------
// A sample's 4 corners are then 4 runs of contiguous channels: the columns of a tile,
// cols[q][t][c], are sums of 4 vectors per (pixel, tap) instead of 4 scalar gathers per channel.

constexpr int64_t kBlockBytes = int64_t(16) << 20;  // the channels_last copy of one channel block

#if defined(__x86_64__) && defined(__GNUC__)
#define DEBLURFAST_AVX2 __attribute__((target("avx2,fma")))
bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define DEBLURFAST_AVX2
bool has_avx2() { return false; }
#endif

// dst[c] = sum over the inside corners k of w[k] * corner_k[c], for c < n; `all`: every corner inside.
template <typename T>
inline void blend_corners_body(T* __restrict__ dst, const T* p0, int64_t W, const Corners<T>& r, int64_t n) {
  const T* __restrict__ a = p0;
  const T* __restrict__ b = p0 + n;
  const T* __restrict__ c = p0 + W * n;
  const T* __restrict__ d = p0 + (W + 1) * n;
  if (r.inside == kAllCorners) {
    const T w0 = r.w[0], w1 = r.w[1], w2 = r.w[2], w3 = r.w[3];
    for (int64_t i = 0; i < n; ++i) dst[i] = w0 * a[i] + w1 * b[i] + w2 * c[i] + w3 * d[i];
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = T(0);
  const T* corner[4] = {a, b, c, d};
  for (int k = 0; k < 4; ++k) {
    if (!(r.inside & (1 << k))) continue;
    const T* __restrict__ src = corner[k];
    const T w = r.w[k];
    for (int64_t i = 0; i < n; ++i) dst[i] += w * src[i];
  }
}

template <typename T>
DEBLURFAST_AVX2 void blend_corners_avx2(T* dst, const T* p0, int64_t W, const Corners<T>& r, int64_t n) {
  blend_corners_body(dst, p0, W, r, n);
}

template <typename T>
void blend_corners(T* dst, const T* p0, int64_t W, const Corners<T>& r, int64_t n) {
  blend_corners_body(dst, p0, W, r, n);
}

// a[k] = g . corner_k for the inside corners k (0 outside), over n channels.
template <typename T>
inline void corner_dots_body(const T* __restrict__ g, const T* p0, int64_t W, int32_t inside, int64_t n, T* a) {
  for (int k = 0; k < 4; ++k) {
    T sum = 0;
    if (inside & (1 << k)) {
      const T* __restrict__ src = p0 + ((k / 2) * W + k % 2) * n;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < n; ++i) sum += g[i] * src[i];
    }
    a[k] = sum;
  }
}

template <typename T>
DEBLURFAST_AVX2 void corner_dots_avx2(const T* g, const T* p0, int64_t W, int32_t inside, int64_t n, T* a) {
  corner_dots_body(g, p0, W, inside, n, a);
}

// corner_k[i] += w[k] * src[i] for the inside corners k, i < len; the corners are `stride` channels apart.
template <typename T>
inline void add_to_corners_body(T* p0, int64_t W, const Corners<T>& r, int64_t stride, const T* __restrict__ src,
                                int64_t len) {
  for (int k = 0; k < 4; ++k) {
    if (!(r.inside & (1 << k))) continue;
    T* __restrict__ dst = p0 + ((k / 2) * W + k % 2) * stride;
    const T w = r.w[k];
    for (int64_t i = 0; i < len; ++i) dst[i] += w * src[i];
  }
}

template <typename T>
DEBLURFAST_AVX2 void add_to_corners_avx2(T* p0, int64_t W, const Corners<T>& r, int64_t stride, const T* src,
                                         int64_t len) {
  add_to_corners_body(p0, W, r, stride, src, len);
}

// Channels in a block: its channels_last copy fits kBlockBytes, at least 8, within one offset group.
int64_t block_channels(const DeformConv2dShape& s, int64_t elem_bytes) {
  const int64_t HW = s.H * s.W, Cg = s.cin_per_offset_group();
  return std::min(Cg, std::max<int64_t>(8, kBlockBytes / std::max<int64_t>(1, HW * elem_bytes)));
}

// The blocks' channel ranges: [c0, c1) of at most `CB` channels, ending early at an offset-group border.
template <typename F>
void for_each_block(const DeformConv2dShape& s, int64_t CB, F&& body) {
  const int64_t Cg = s.cin_per_offset_group();
  for (int64_t c0 = 0, c1 = 0; c0 < s.Cin; c0 = c1) {
    c1 = std::min(c0 + CB, (c0 / Cg + 1) * Cg);
    body(c0, c1);
  }
}

// copy(pixel, c) over a block's HW pixels and nb channels, by runs of 64 pixels: the channel planes
// are read or written in contiguous runs, the channels_last block in rows of nb.
template <typename F>
void by_pixel_runs(int64_t HW, int64_t nb, const F& copy) {
  at::parallel_for(0, HW, 4096, [&](int64_t b, int64_t e) {
    for (int64_t q0 = b; q0 < e; q0 += 64)
      for (int64_t c = 0; c < nb; ++c)
        for (int64_t q = q0; q < std::min(q0 + 64, e); ++q) copy(q, c);
  });
}

// wb[o][t][c] = weight[o][c0 + c][t], the order of a block's column.
template <typename T>
void block_weight(const T* weight, const DeformConv2dShape& s, int64_t c0, int64_t nb, T* wb) {
  const int64_t K = s.taps();
  for (int64_t o = 0; o < s.Cout; ++o)
    for (int64_t t = 0; t < K; ++t)
      for (int64_t c = 0; c < nb; ++c) wb[(o * K + t) * nb + c] = weight[(o * s.Cin + c0 + c) * K + t];
}

// The columns of one output pixel, cols[t][c] for the block's nb channels, from its taps' corners.
template <typename T>
void pixel_columns(const T* xb, int64_t W, const Corners<T>* geo, int64_t K, int64_t nb, bool avx2, T* cols) {
  for (int64_t t = 0; t < K; ++t) {
    const T* corner0 = xb + geo[t].base * nb;
    if (avx2)
      blend_corners_avx2(cols + t * nb, corner0, W, geo[t], nb);
    else
      blend_corners(cols + t * nb, corner0, W, geo[t], nb);
  }
}

template <typename T>
void forward_kernel_blocked(const T* x, const T* offset, const T* mask, const T* weight, const T* bias, T* out,
                            const DeformConv2dShape& s, const at::TensorOptions& opt) {
  const int64_t K = s.taps(), HoWo = s.out_pixels(), HW = s.H * s.W, CB = block_channels(s, sizeof(T));
  const int64_t P =
      std::max<int64_t>(1, std::min(HoWo, kForwardTileBytes / int64_t(sizeof(T) * K * CB + sizeof(Corners<T>) * K)));
  const int64_t tiles = (HoWo + P - 1) / P;
  const bool avx2 = has_avx2();
  const Geometry<T> geometry{s, offset, mask};
  std::vector<T> xb(HW * CB), wb(s.Cout * K * CB);
  for (int64_t n = 0; n < s.N; ++n) {
    T* on = out + n * s.Cout * HoWo;
    at::parallel_for(0, s.Cout, 1, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) std::fill(on + o * HoWo, on + (o + 1) * HoWo, bias ? bias[o] : T(0));
    });
    for_each_block(s, CB, [&](int64_t c0, int64_t c1) {
      const int64_t g = c0 / s.cin_per_offset_group(), nb = c1 - c0;
      const T* planes = x + (n * s.Cin + c0) * HW;  // xb[pixel][c]: the block channels_last
      by_pixel_runs(HW, nb, [&](int64_t q, int64_t c) { xb[q * nb + c] = planes[c * HW + q]; });
      block_weight(weight, s, c0, nb, wb.data());
      const at::Tensor w = wrap(wb.data(), {s.Cout, K * nb}, {K * nb, 1}, opt);
      at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> cols(P * K * nb);  // cols[q][t][c]
        std::vector<Corners<T>> geo(K);
        for (int64_t tile = begin; tile < end; ++tile) {
          const int64_t p0 = tile * P, Pt = std::min(P, HoWo - p0);
          for (int64_t q = 0; q < Pt; ++q) {
            for (int64_t t = 0; t < K; ++t) geo[t] = corners_of(geometry(n, g, t, p0 + q), s.W);
            pixel_columns(xb.data(), s.W, geo.data(), K, nb, avx2, cols.data() + q * K * nb);
          }
          // out[:, p0:p0+Pt] += w @ cols^T, written in place (the tiles' pixels are disjoint)
          at::Tensor o = wrap(on + p0, {s.Cout, Pt}, {HoWo, 1}, opt);
          o.addmm_(w, wrap(cols.data(), {K * nb, Pt}, {1, K * nb}, opt));
        }
      });
    });
  }
}

template <typename T>
void forward_kernel(const T* x, const T* offset, const T* mask, const T* weight, const T* bias, T* out,
                    const DeformConv2dShape& s, const at::TensorOptions& opt) {
  if (s.groups == 1) return forward_kernel_blocked(x, offset, mask, weight, bias, out, s, opt);
  const int64_t K = s.taps(), HoWo = s.out_pixels(), CinK = s.Cin * K;
  const int64_t Cg_out = s.cout_per_group(), CgK = s.cin_per_group() * K;
  const int64_t bytes_per_pixel = sizeof(T) * (CinK + s.Cout) + sizeof(Corners<T>) * s.offset_groups * K;
  // Each thread's tile (columns, GEMM result, corners) stays near its L2, so the columns are
  // written and read by the GEMM in cache.
  const int64_t P = std::max<int64_t>(1, std::min(HoWo, kForwardTileBytes / bytes_per_pixel));
  const int64_t tiles_per_image = (HoWo + P - 1) / P;
  const Geometry<T> geometry{s, offset, mask};
  at::parallel_for(0, s.N * tiles_per_image, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> cols(CinK * P), acc(s.Cout * P);
    std::vector<Corners<T>> geo(s.offset_groups * K * P);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t n = tile / tiles_per_image, p0 = (tile % tiles_per_image) * P, Pt = std::min(P, HoWo - p0);
      for (int64_t gt = 0; gt < s.offset_groups * K; ++gt)
        for (int64_t q = 0; q < Pt; ++q) geo[gt * Pt + q] = corners_of(geometry(n, gt / K, gt % K, p0 + q), s.W);
      tile_columns_fast(s, x + n * s.Cin * s.H * s.W, geo.data(), Pt, 0, s.Cin, cols.data());
      for (int64_t wg = 0; wg < s.groups; ++wg) {  // acc[o, q] = weight[o, :] . cols[:, q] per weight group
        at::Tensor a = wrap(acc.data() + wg * Cg_out * Pt, {Cg_out, Pt}, {Pt, 1}, opt);
        at::mm_out(a, wrap(weight + wg * Cg_out * CgK, {Cg_out, CgK}, {CgK, 1}, opt),
                   wrap(cols.data() + wg * CgK * Pt, {CgK, Pt}, {Pt, 1}, opt));
      }
      for (int64_t o = 0; o < s.Cout; ++o) {
        T* dst = out + (n * s.Cout + o) * HoWo + p0;
        const T b = bias ? bias[o] : T(0);
        for (int64_t q = 0; q < Pt; ++q) dst[q] = acc[o * Pt + q] + b;
      }
    }
  });
}

// Backward without weight groups, by the forward's channel blocks; blocks outer and images inner, so a
// block's grad_weight is summed over every image before it is written. For a tile of output pixels:
// cols (the forward's columns) and gcols = grad_out^T @ weight, both [pixel][tap][channel]; the block's
// grad_weight += grad_out @ cols; grad_offset and grad_mask from the dots of each (pixel, tap)'s gcols
// run with its 4 corners' channel runs, added over the blocks (pixels in parallel: disjoint outputs);
// grad_input by adding each gcols run into its corners of a channels_last buffer, the threads split by
// channels, so every element has one writer and the same order of additions whatever the thread count.
template <typename T>
void backward_kernel_blocked(const T* grad_out, const T* x, const T* offset, const T* mask, const T* weight,
                             const DeformConv2dShape& s, const at::TensorOptions& opt, T* gx, T* goff, T* gw,
                             T* gmask) {
  const int64_t K = s.taps(), HoWo = s.out_pixels(), HW = s.H * s.W, CB = block_channels(s, sizeof(T));
  const bool need_cols = gw != nullptr, need_gcols = gx || goff || gmask;
  const int64_t bytes_per_pixel = int64_t(sizeof(T)) * K * CB * (int64_t(need_cols) + int64_t(need_gcols)) +
                                  int64_t(sizeof(Sample<T>) + sizeof(Corners<T>)) * K;
  const int64_t P = std::max<int64_t>(1, std::min(HoWo, kBlockedBackwardTileBytes / bytes_per_pixel));
  const bool avx2 = has_avx2();
  const Geometry<T> geometry{s, offset, mask};
  std::vector<T> xb(HW * CB), gxb(gx ? HW * CB : 0), wb(s.Cout * K * CB), gwb(gw ? s.Cout * K * CB : 0);
  std::vector<T> cols(need_cols ? P * K * CB : 0), gcols(need_gcols ? P * K * CB : 0);
  std::vector<Sample<T>> smp(P * K);
  std::vector<Corners<T>> geo(P * K);
  for_each_block(s, CB, [&](int64_t c0, int64_t c1) {
    const int64_t g = c0 / s.cin_per_offset_group(), nb = c1 - c0;
    block_weight(weight, s, c0, nb, wb.data());
    const at::Tensor w = wrap(wb.data(), {s.Cout, K * nb}, {K * nb, 1}, opt);
    std::fill(gwb.begin(), gwb.end(), T(0));
    for (int64_t n = 0; n < s.N; ++n) {
      const T* planes = x + (n * s.Cin + c0) * HW;
      by_pixel_runs(HW, nb, [&](int64_t q, int64_t c) { xb[q * nb + c] = planes[c * HW + q]; });
      std::fill(gxb.begin(), gxb.end(), T(0));
      for (int64_t p0 = 0; p0 < HoWo; p0 += P) {
        const int64_t Pt = std::min(P, HoWo - p0);
        at::parallel_for(0, Pt, 16, [&](int64_t b, int64_t e) {
          for (int64_t q = b; q < e; ++q) {
            for (int64_t t = 0; t < K; ++t) {
              smp[q * K + t] = geometry(n, g, t, p0 + q);
              geo[q * K + t] = corners_of(smp[q * K + t], s.W);
            }
            if (need_cols) pixel_columns(xb.data(), s.W, geo.data() + q * K, K, nb, avx2, cols.data() + q * K * nb);
          }
        });
        const at::Tensor go = wrap(grad_out + n * s.Cout * HoWo + p0, {s.Cout, Pt}, {HoWo, 1}, opt);  // [Cout, Pt]
        if (need_cols)
          wrap(gwb.data(), {s.Cout, K * nb}, {K * nb, 1}, opt).addmm_(go, wrap(cols.data(), {Pt, K * nb}, {K * nb, 1}, opt));
        if (!need_gcols) continue;
        at::Tensor gc = wrap(gcols.data(), {Pt, K * nb}, {K * nb, 1}, opt);
        at::mm_out(gc, go.t(), w);
        if (goff || gmask) {
          at::parallel_for(0, Pt, 16, [&](int64_t b, int64_t e) {
            for (int64_t qt = b * K; qt < e * K; ++qt) {
              const Sample<T>& sm = smp[qt];
              const Corners<T>& r = geo[qt];
              T a[4], wt[4];  // a[k]: gcols . corner k's channels
              if (avx2)
                corner_dots_avx2(gcols.data() + qt * nb, xb.data() + r.base * nb, s.W, r.inside, nb, a);
              else
                corner_dots_body(gcols.data() + qt * nb, xb.data() + r.base * nb, s.W, r.inside, nb, a);
              corner_weights(sm, wt);
              const int64_t t = qt % K, i = ((n * s.offset_groups + g) * K + t) * HoWo + p0 + qt / K;
              if (gmask) gmask[i] += wt[0] * a[0] + wt[1] * a[1] + wt[2] * a[2] + wt[3] * a[3];
              if (goff) {
                T* o = goff + i + ((n * s.offset_groups + g) * K + t) * HoWo;  // rows 2(gK+t) (dy) and 2(gK+t)+1 (dx)
                o[0] += sm.m * ((1 - sm.lx) * (a[2] - a[0]) + sm.lx * (a[3] - a[1]));
                o[HoWo] += sm.m * ((1 - sm.ly) * (a[1] - a[0]) + sm.ly * (a[3] - a[2]));
              }
            }
          });
        }
        if (gx) {
          at::parallel_for(0, nb, 8, [&](int64_t b, int64_t e) {
            for (int64_t qt = 0; qt < Pt * K; ++qt) {
              const Corners<T>& r = geo[qt];
              if (!r.inside) continue;
              if (avx2)
                add_to_corners_avx2(gxb.data() + r.base * nb + b, s.W, r, nb, gcols.data() + qt * nb + b, e - b);
              else
                add_to_corners_body(gxb.data() + r.base * nb + b, s.W, r, nb, gcols.data() + qt * nb + b, e - b);
            }
          });
        }
      }
      if (gx) {  // gx arrives zeroed and each (image, channel) plane belongs to one block
        T* gplanes = gx + (n * s.Cin + c0) * HW;
        by_pixel_runs(HW, nb, [&](int64_t q, int64_t c) { gplanes[c * HW + q] = gxb[q * nb + c]; });
      }
    }
    if (gw)
      for (int64_t o = 0; o < s.Cout; ++o)
        for (int64_t t = 0; t < K; ++t)
          for (int64_t c = 0; c < nb; ++c) gw[(o * s.Cin + c0 + c) * K + t] = gwb[(o * K + t) * nb + c];
  });
}

template <typename T>
void backward_kernel(const T* grad_out, const T* x, const T* offset, const T* mask, const T* weight,
                     const DeformConv2dShape& s, const at::TensorOptions& opt, T* gx, T* goff, T* gw, T* gmask) {
  if (s.groups == 1) return backward_kernel_blocked(grad_out, x, offset, mask, weight, s, opt, gx, goff, gw, gmask);
  const int64_t K = s.taps(), HoWo = s.out_pixels(), CinK = s.Cin * K, HW = s.H * s.W;
  const int64_t Cg_out = s.cout_per_group(), CgK = s.cin_per_group() * K, Cg = s.cin_per_offset_group();
  const bool need_cols = gw != nullptr, need_gcols = gx || goff || gmask;
  const int64_t bytes_per_pixel =
      sizeof(T) * CinK * (int64_t(need_cols) + int64_t(need_gcols)) + sizeof(Sample<T>) * s.offset_groups * K;
  const int64_t P = tile_pixels(bytes_per_pixel, 1, HoWo);
  const Geometry<T> geometry{s, offset, mask};
  std::vector<T> cols(need_cols ? CinK * P : 0), gcols(need_gcols ? CinK * P : 0);
  std::vector<Sample<T>> geo(s.offset_groups * K * P);
  // gx and gw arrive zeroed: the tiles accumulate into them.
  for (int64_t n = 0; n < s.N; ++n) {
    const T* xn = x + n * s.Cin * HW;
    const T* gon = grad_out + n * s.Cout * HoWo;
    for (int64_t p0 = 0; p0 < HoWo; p0 += P) {
      const int64_t Pt = std::min(P, HoWo - p0);
      at::parallel_for(0, s.offset_groups * K, 1, [&](int64_t b, int64_t e) {
        for (int64_t gt = b; gt < e; ++gt)
          for (int64_t q = 0; q < Pt; ++q) geo[gt * Pt + q] = geometry(n, gt / K, gt % K, p0 + q);
      });
      for (int64_t wg = 0; wg < s.groups; ++wg) {
        // grad_out of this tile and weight group: [Cg_out, Pt], rows strided by HoWo
        const at::Tensor go = wrap(gon + wg * Cg_out * HoWo + p0, {Cg_out, Pt}, {HoWo, 1}, opt);
        const at::Tensor w = wrap(weight + wg * Cg_out * CgK, {Cg_out, CgK}, {CgK, 1}, opt);
        if (need_cols) {
          const int64_t c0 = wg * s.cin_per_group(), c1 = c0 + s.cin_per_group();
          at::parallel_for(c0, c1, 1, [&](int64_t b, int64_t e) { tile_columns(s, xn, geo.data(), Pt, b, e, cols.data()); });
          at::Tensor gwt = wrap(gw + wg * Cg_out * CgK, {Cg_out, CgK}, {CgK, 1}, opt);
          gwt.addmm_(go, wrap(cols.data() + c0 * K * Pt, {CgK, Pt}, {Pt, 1}, opt).t());
        }
        if (need_gcols) {
          at::Tensor gc = wrap(gcols.data() + wg * CgK * Pt, {CgK, Pt}, {Pt, 1}, opt);
          at::mm_out(gc, w.t(), go);  // grad of cols: [CgK, Pt]
        }
      }
      if (gx) {  // scatter to the 4 corners: one input channel per task, so no two tasks write one element
        at::parallel_for(0, s.Cin, 1, [&](int64_t b, int64_t e) {
          for (int64_t c = b; c < e; ++c) {
            T* plane = gx + (n * s.Cin + c) * HW;
            const Sample<T>* gc = geo.data() + (c / Cg) * K * Pt;
            const T* g = gcols.data() + c * K * Pt;
            for (int64_t tq = 0; tq < K * Pt; ++tq) {
              T w[4];
              corner_weights(gc[tq], w);
              const T v = g[tq] * gc[tq].m;
              for (int k = 0; k < 4; ++k)
                if (gc[tq].corner[k] >= 0) plane[gc[tq].corner[k]] += v * w[k];
            }
          }
        });
      }
      if (goff || gmask) {  // reduce over the offset group's channels: one (group, tap) per task
        at::parallel_for(0, s.offset_groups * K, 1, [&](int64_t b, int64_t e) {
          for (int64_t gt = b; gt < e; ++gt) {
            const int64_t g = gt / K, t = gt % K;
            for (int64_t q = 0; q < Pt; ++q) {
              const Sample<T>& smp = geo[gt * Pt + q];
              T w[4];
              corner_weights(smp, w);
              T dsy = 0, dsx = 0, dm = 0;
              for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
                const T* plane = xn + c * HW;
                T v[4];
                for (int k = 0; k < 4; ++k) v[k] = smp.corner[k] >= 0 ? plane[smp.corner[k]] : T(0);
                const T gcv = gcols[(c * K + t) * Pt + q];
                dm += gcv * (w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3]);
                dsy += gcv * ((1 - smp.lx) * (v[2] - v[0]) + smp.lx * (v[3] - v[1]));
                dsx += gcv * ((1 - smp.ly) * (v[1] - v[0]) + smp.ly * (v[3] - v[2]));
              }
              const int64_t pix = p0 + q;
              if (gmask) gmask[((n * s.offset_groups + g) * K + t) * HoWo + pix] = dm;
              if (goff) {
                T* o = goff + ((n * s.offset_groups + g) * K + t) * 2 * HoWo + pix;
                o[0] = dsy * smp.m;
                o[HoWo] = dsx * smp.m;
              }
            }
          }
        });
      }
    }
  }
}

void check_cpu(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "deform_conv2d (cpu): input must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "deform_conv2d (cpu): input must be float32 or float64, got ", t.scalar_type());
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

at::Tensor contiguous_or_undefined(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->contiguous() : at::Tensor();
}

at::Tensor deform_conv2d_cpu(const at::Tensor& input, const c10::optional<at::Tensor>& offset,
                             const at::Tensor& weight, const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation,
                             const c10::optional<at::Tensor>& mask) {
  const DeformConv2dShape s = deform_conv2d_shape(input, offset, weight, bias, stride, padding, dilation, mask);
  check_cpu(input);
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), off = contiguous_or_undefined(offset),
                   msk = contiguous_or_undefined(mask), b = contiguous_or_undefined(bias);
  at::Tensor out = at::empty({s.N, s.Cout, s.Ho, s.Wo}, x.options());
  if (out.numel() == 0) return out;
  if (s.Cin == 0) return b.defined() ? out.copy_(b.view({1, s.Cout, 1, 1}).expand_as(out)) : out.zero_();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deform_conv2d_cpu", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(off), ptr_or_null<scalar_t>(msk),
                             w.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(b), out.mutable_data_ptr<scalar_t>(),
                             s, x.options());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const c10::optional<at::Tensor>& offset,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, const c10::optional<at::Tensor>& mask,
    std::array<bool, 5> output_mask) {
  const DeformConv2dShape s = deform_conv2d_shape(input, offset, weight, bias, stride, padding, dilation, mask);
  check_cpu(input);
  check_grad_output(grad_output, input, s);
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous(), w = weight.contiguous(),
                   off = contiguous_or_undefined(offset), msk = contiguous_or_undefined(mask);
  const auto opt = x.options();
  auto grad_or_empty = [&](bool wanted, at::IntArrayRef sizes) {
    return wanted ? at::zeros(sizes, opt) : at::empty({0}, opt);
  };
  at::Tensor gx = grad_or_empty(output_mask[0], x.sizes());
  at::Tensor goff = grad_or_empty(output_mask[1] && s.has_offset, off.defined() ? off.sizes() : at::IntArrayRef{0});
  at::Tensor gw = grad_or_empty(output_mask[2], w.sizes());
  at::Tensor gb = output_mask[3] && s.has_bias ? go.sum({0, 2, 3}) : at::empty({0}, opt);
  at::Tensor gm = grad_or_empty(output_mask[4] && s.has_mask, msk.defined() ? msk.sizes() : at::IntArrayRef{0});
  auto p = [](at::Tensor& t) { return t.numel() ? t.mutable_data_ptr() : nullptr; };
  if (go.numel() > 0 && s.Cin > 0 && (gx.numel() || goff.numel() || gw.numel() || gm.numel())) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deform_conv2d_backward_cpu", [&] {
      backward_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                ptr_or_null<scalar_t>(off), ptr_or_null<scalar_t>(msk), w.const_data_ptr<scalar_t>(),
                                s, opt, static_cast<scalar_t*>(p(gx)), static_cast<scalar_t*>(p(goff)),
                                static_cast<scalar_t*>(p(gw)), static_cast<scalar_t*>(p(gm)));
    });
  }
  return {gx, goff, gw, gb, gm};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurfast, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_cpu);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace deblurfast
