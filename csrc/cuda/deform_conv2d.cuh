// deform_conv2d (modulated deformable convolution, DCNv2; ops.md §1) CUDA
// kernels as functors: forward and backward for float32/float64/float16/
// bfloat16, accumulating in float32 (float64 for float64). Instantiated for the
// GPU by deform_conv2d_kernel.cu and for the host by the CPU emulation in
// tests/cuda_emulation. Pure CUDA, no torch.
//
// Forward: one item per (n, weight group, block of OB output channels, output
// pixel). Per (offset group, tap) it locates the sample once (4 corners and
// their bilinear weights, mask folded in), then for each input channel samples
// once and FMAs into OB register accumulators with the weights of that
// (channel, tap), which were packed beforehand to [group][block][cin][tap][OB]
// (accumulation type) so an item reads them as aligned 16-byte, warp-uniform loads.
//
// Backward data (grad_input, grad_offset, grad_mask): one item per (n, offset
// group, tap, output pixel). For tiles of kDataTile input channels (half that
// for float64) it forms grad_cols[c] = sum_o weight[o, c, t] * grad_out[o, p]
// in registers (weights packed to [group][tap][cout][cin_pad], aligned vector
// loads), then per channel: grad_input by atomicAdd to the 4 corners (into
// grad_input itself for float32/float64, into a float32 workspace cast at the
// end for the 16-bit types: NOT deterministic), grad_offset / grad_mask as a
// reduction over the offset group's channels inside the item (no atomics).
//
// Backward weight: partial sums over chunks of the N*Ho*Wo pixels, one item per
// (chunk, weight group, tile of kWeightOutTile output channels, tap, tile of
// kWeightChanTile input channels) with the tile's products in registers, into
// [chunks][Cout][Cin/groups*K]; a second pass adds the chunks in a fixed order
// (deterministic). grad_bias likewise ([chunks][Cout], then the same pass).
//
// A sample whose position is outside (NaN included) reads nothing: no corner
// offset is formed, so no out-of-bounds access whatever the offsets hold.
// In-plane offsets are int32 (the glue requires H*W < 2^31, Ho*Wo < 2^31);
// plane and batch offsets are int64.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/deform_conv2d.h"
#include "cuda/grid.cuh"

namespace deblurfast {
namespace cuda {
namespace deform_conv2d {

constexpr int kDataTile = 8;         // input channels of one grad_cols tile (backward data)
constexpr int kWeightOutTile = 8;    // output channels per weight-gradient item
constexpr int kWeightChanTile = 4;   // input channels per weight-gradient item
constexpr int64_t kMinChunkPixels = 64;  // fewest pixels a weight-gradient chunk gets
constexpr int64_t kMaxPartial = int64_t(1) << 24;  // most weight-gradient partial sums (64 MB in float32)
constexpr size_t kAlign = 256;       // alignment of the workspace's parts

// Work split of one call; the same function of (shape, min_items) everywhere.
struct Plan {
  int ob;              // forward: output channels per item (8 or 16)
  int64_t blocks;      // forward: output-channel blocks per weight group
  int64_t cig_pad;     // backward data: Cin/groups rounded up to kDataTile
  int64_t w_oblocks;   // backward weight: output-channel tiles per weight group
  int64_t w_ctiles;    // backward weight: input-channel tiles per weight group
  int64_t chunk_size;  // backward weight/bias: pixels (of N*Ho*Wo) per chunk
  int64_t chunks;      // number of chunks (0 when there are no pixels)
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// min_items: items wanted to fill the device; min_chunk_pixels: fewest pixels
// per weight-gradient chunk (the emulation lowers it to test many chunks).
inline Plan make_plan(DType dtype, const DeformConv2dShape& s, int64_t min_items,
                      int64_t min_chunk_pixels = kMinChunkPixels) {
  Plan p{};
  const int64_t Cog = s.cout_per_group(), Cig = s.cin_per_group(), K = s.taps();
  const int64_t pixels = s.N * s.groups * s.out_pixels();
  // 16 output channels per item halve the sampling work per FMA; 8 when the
  // image is too small to fill the device otherwise, and for float64 (16
  // double accumulators spill).
  p.ob = (dtype != DType::Float64 && Cog > 8 && pixels * ceil_div(Cog, 16) >= min_items) ? 16 : 8;
  p.blocks = ceil_div(Cog, p.ob);
  p.cig_pad = ceil_div(Cig, kDataTile) * kDataTile;
  p.w_oblocks = ceil_div(Cog, kWeightOutTile);
  p.w_ctiles = ceil_div(Cig, kWeightChanTile);
  const int64_t NP = s.N * s.out_pixels();
  if (NP == 0) {
    p.chunk_size = 1;
    p.chunks = 0;
    return p;
  }
  const int64_t per_chunk = s.groups * p.w_oblocks * K * p.w_ctiles;
  int64_t chunks = ceil_div(min_items, per_chunk > 0 ? per_chunk : 1);
  // at least min_chunk_pixels per chunk, and at most kMaxPartial partial sums in the workspace
  const int64_t by_pixels = ceil_div(NP, min_chunk_pixels > 0 ? min_chunk_pixels : 1);
  const int64_t by_space = kMaxPartial / (s.Cout * Cig * K > 0 ? s.Cout * Cig * K : 1);
  const int64_t most = by_pixels < by_space ? by_pixels : by_space;
  chunks = chunks > most ? most : chunks;
  chunks = chunks < 1 ? 1 : chunks;
  p.chunk_size = ceil_div(NP, chunks);
  p.chunks = ceil_div(NP, p.chunk_size);
  return p;
}

inline size_t acc_size(DType dtype) { return dtype == DType::Float64 ? sizeof(double) : sizeof(float); }
inline size_t aligned(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Bytes of the forward's workspace: the packed weights.
inline size_t forward_workspace(DType dtype, const DeformConv2dShape& s, const Plan& p) {
  return aligned(acc_size(dtype) * size_t(s.groups * p.blocks * s.cin_per_group() * s.taps() * p.ob));
}

// Byte offsets of the backward's workspace parts (each 0 bytes when unused).
struct BackwardLayout {
  size_t data_weights = 0, grad_input = 0, weight_partial = 0, bias_partial = 0, total = 0;
};

inline BackwardLayout backward_layout(DType dtype, const DeformConv2dShape& s, const Plan& p, bool grad_input,
                                      bool grad_offset, bool grad_weight, bool grad_bias, bool grad_mask) {
  const size_t a = acc_size(dtype);
  const bool data = grad_input || (grad_offset && s.has_offset) || (grad_mask && s.has_mask);
  const bool low = dtype == DType::Float16 || dtype == DType::BFloat16;
  BackwardLayout l;
  size_t at = 0;
  l.data_weights = at;
  if (data) at += aligned(a * size_t(s.groups * s.taps() * s.cout_per_group() * p.cig_pad));
  l.grad_input = at;
  if (grad_input && low) at += aligned(a * size_t(s.N * s.Cin * s.H * s.W));
  l.weight_partial = at;
  if (grad_weight) at += aligned(a * size_t(p.chunks * s.Cout * s.cin_per_group() * s.taps()));
  l.bias_partial = at;
  if (grad_bias && s.has_bias) at += aligned(a * size_t(p.chunks * s.Cout));
  l.total = at;
  return l;
}

// ---------------------------------------------------------------------------
// Sampling geometry

// Where one (pixel, tap, offset group) samples: kCorners corners, each an
// in-plane offset (-1: outside, reads 0) and a weight (0 when outside). With
// kDeform == false the position is the integer grid point: one corner.
template <typename A, bool kDeform>
struct Sample {
  static constexpr int kCorners = kDeform ? 4 : 1;
  int32_t off[kCorners];
  A w[kCorners];
  A ly, lx;  // fractional parts of the position (kDeform)
  bool any;  // some corner is inside

  // (ybase, xbase): the tap's grid position; (dy, dx): its offset.
  DEBLURFAST_HOST_DEVICE Sample(const DeformConv2dShape& s, int64_t ybase, int64_t xbase, A dy, A dx) {
    ly = lx = A(0);
#pragma unroll
    for (int k = 0; k < kCorners; ++k) {
      off[k] = -1;
      w[k] = A(0);
    }
    if constexpr (!kDeform) {
      any = ybase >= 0 && ybase < s.H && xbase >= 0 && xbase < s.W;
      if (any) {
        off[0] = static_cast<int32_t>(ybase * s.W + xbase);
        w[0] = A(1);
      }
    } else {
      const A py = A(ybase) + dy, px = A(xbase) + dx;
      // torchvision's rule, written so that a NaN position is outside too.
      any = false;
      if (!(py > A(-1) && py < A(s.H) && px > A(-1) && px < A(s.W))) return;
      const A fy = floor_acc(py), fx = floor_acc(px);
      ly = py - fy;
      lx = px - fx;
      const A hy = A(1) - ly, hx = A(1) - lx;
      const int32_t y0 = static_cast<int32_t>(fy), x0 = static_cast<int32_t>(fx);  // in [-1, H-1] x [-1, W-1]
      const int32_t H = static_cast<int32_t>(s.H), W = static_cast<int32_t>(s.W);
      const bool y0in = y0 >= 0, y1in = y0 + 1 < H, x0in = x0 >= 0, x1in = x0 + 1 < W;
      if (y0in && x0in) {
        off[0] = y0 * W + x0;
        w[0] = hy * hx;
      }
      if (y0in && x1in) {
        off[1] = y0 * W + x0 + 1;
        w[1] = hy * lx;
      }
      if (y1in && x0in) {
        off[2] = (y0 + 1) * W + x0;
        w[2] = ly * hx;
      }
      if (y1in && x1in) {
        off[3] = (y0 + 1) * W + x0 + 1;
        w[3] = ly * lx;
      }
      any = (y0in || y1in) && (x0in || x1in);
    }
  }

  // The corner values of one channel plane (0 for a corner outside).
  template <typename T>
  DEBLURFAST_HOST_DEVICE void load(const T* __restrict__ plane, A (&v)[kCorners]) const {
#pragma unroll
    for (int k = 0; k < kCorners; ++k) v[k] = off[k] >= 0 ? A(to_acc(plane[off[k]])) : A(0);
  }

  // sum_k w[k] * plane[off[k]]
  template <typename T>
  DEBLURFAST_HOST_DEVICE A value(const T* __restrict__ plane) const {
    A v = 0;
#pragma unroll
    for (int k = 0; k < kCorners; ++k)
      if (off[k] >= 0) v += w[k] * A(to_acc(plane[off[k]]));
    return v;
  }

  DEBLURFAST_HOST_DEVICE void scale(A m) {
#pragma unroll
    for (int k = 0; k < kCorners; ++k) w[k] *= m;
  }
};

// Reads the offsets (dy, dx) of tap t at offset-channel base `offp` (pointing at
// [n, 2*g*K, p]) and builds the sample of tap (i, j) of output pixel (ho, wo).
template <typename A, bool kDeform, typename T>
DEBLURFAST_HOST_DEVICE Sample<A, kDeform> locate(const DeformConv2dShape& s, const T* __restrict__ offp, int64_t P,
                                                 int t, int i, int j, int64_t ho, int64_t wo) {
  const int64_t yb = ho * s.sh - s.ph + i * s.dh, xb = wo * s.sw - s.pw + j * s.dw;
  if constexpr (kDeform)
    return Sample<A, true>(s, yb, xb, A(to_acc(offp[2 * t * P])), A(to_acc(offp[(2 * t + 1) * P])));
  else
    return Sample<A, false>(s, yb, xb, A(0), A(0));
}

// ---------------------------------------------------------------------------
// Weight packing and small passes

// pack[g][b][cl][t][ol] = weight[g*Cog + b*OB + ol][cl][t], 0 past Cog.
template <typename T>
struct PackForwardWeights {
  const T* __restrict__ weight;  // [Cout, Cig, kh, kw]
  acc_t<T>* __restrict__ pack;
  DeformConv2dShape s;
  int64_t blocks;
  int ob;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    const int64_t K = s.kh * s.kw, Cig = s.Cin / s.groups, Cog = s.Cout / s.groups;
    const int64_t ol = idx % ob, r1 = idx / ob, t = r1 % K, r2 = r1 / K, cl = r2 % Cig, r3 = r2 / Cig;
    const int64_t b = r3 % blocks, g = r3 / blocks, o = b * ob + ol;
    pack[idx] = o < Cog ? acc_t<T>(to_acc(weight[((g * Cog + o) * Cig + cl) * K + t])) : acc_t<T>(0);
  }
};

// pack[g][t][o][cl] = weight[g*Cog + o][cl][t], cl padded to cig_pad with 0.
template <typename T>
struct PackDataWeights {
  const T* __restrict__ weight;
  acc_t<T>* __restrict__ pack;
  DeformConv2dShape s;
  int64_t cig_pad;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    const int64_t K = s.kh * s.kw, Cig = s.Cin / s.groups, Cog = s.Cout / s.groups;
    const int64_t cl = idx % cig_pad, r1 = idx / cig_pad, o = r1 % Cog, r2 = r1 / Cog, t = r2 % K, g = r2 / K;
    pack[idx] = cl < Cig ? acc_t<T>(to_acc(weight[((g * Cog + o) * Cig + cl) * K + t])) : acc_t<T>(0);
  }
};

template <typename A>
struct Zero {
  A* __restrict__ p;
  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const { p[idx] = A(0); }
};

template <typename T>
struct CastFromAcc {
  const acc_t<T>* __restrict__ src;
  T* __restrict__ dst;
  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const { dst[idx] = from_acc<T>(src[idx]); }
};

// out[i] = sum over chunks, in order, of partial[chunk][i]; 0 without chunks.
template <typename T>
struct ReduceChunks {
  const acc_t<T>* __restrict__ partial;  // [chunks][len]
  T* __restrict__ out;                   // [len]
  int64_t chunks, len;
  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    acc_t<T> acc = 0;
    for (int64_t c = 0; c < chunks; ++c) acc += partial[c * len + idx];
    out[idx] = from_acc<T>(acc);
  }
};

// ---------------------------------------------------------------------------
// Forward

// KH, KW > 0: kernel size known at compile time; 0: any.
template <typename T, int KH, int KW, bool kDeform, int OB>
struct Forward {
  const T* __restrict__ x;         // [N, Cin, H, W]
  const T* __restrict__ offset;    // [N, 2*G*K, Ho, Wo] (kDeform)
  const T* __restrict__ mask;      // [N, G*K, Ho, Wo] or null
  const acc_t<T>* __restrict__ wpack;  // PackForwardWeights
  const T* __restrict__ bias;      // [Cout] or null
  T* __restrict__ out;             // [N, Cout, Ho, Wo]
  DeformConv2dShape s;
  int64_t blocks;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    const int kh = KH > 0 ? KH : static_cast<int>(s.kh), kw = KW > 0 ? KW : static_cast<int>(s.kw);
    const int K = kh * kw;
    const int64_t P = s.Ho * s.Wo, HW = s.H * s.W, G = s.offset_groups;
    const int64_t Cig = s.Cin / s.groups, Cog = s.Cout / s.groups, Cgo = s.Cin / G;
    // idx -> (n, g, b, p), the pixel fastest: a warp reads consecutive offsets and writes consecutive outputs
    const int64_t p = idx % P, r1 = idx / P, b = r1 % blocks, r2 = r1 / blocks, g = r2 % s.groups, n = r2 / s.groups;
    const int64_t ho = p / s.Wo, wo = p % s.Wo;
    A acc[OB];
#pragma unroll
    for (int o = 0; o < OB; ++o) acc[o] = A(0);
    const int64_t cb = g * Cig, ce = cb + Cig;
    // runs of the weight group's channels that share an offset group
    for (int64_t c0 = cb; c0 < ce;) {
      const int64_t og = c0 / Cgo, c1 = min64(ce, (og + 1) * Cgo);
      const T* offp = kDeform ? offset + (n * 2 * G + 2 * og) * K * P + p : nullptr;
      const T* mp = mask != nullptr ? mask + (n * G + og) * K * P + p : nullptr;
      const A* wrow = wpack + ((g * blocks + b) * Cig + (c0 - cb)) * K * OB;
      const T* xrun = x + (n * s.Cin + c0) * HW;
      for (int i = 0; i < kh; ++i) {
        for (int j = 0; j < kw; ++j) {
          const int t = i * kw + j;
          Sample<A, kDeform> smp = locate<A, kDeform>(s, offp, P, t, i, j, ho, wo);
          if (!smp.any) continue;
          if (mp != nullptr) smp.scale(A(to_acc(mp[t * P])));
          const A* wp = wrow + t * OB;
          const T* xc = xrun;
          for (int64_t c = c0; c < c1; ++c, xc += HW, wp += K * OB) {
            const A v = smp.value(xc);
            A wv[OB];
            load_aligned(wp, wv);
#pragma unroll
            for (int o = 0; o < OB; ++o) acc[o] += wv[o] * v;
          }
        }
      }
      c0 = c1;
    }
    const int64_t o0 = g * Cog + b * OB;
    const int64_t valid = min64(OB, Cog - b * OB);
    T* op = out + (n * s.Cout + o0) * P + p;
#pragma unroll
    for (int o = 0; o < OB; ++o) {
      if (o < valid) {
        const A bv = bias != nullptr ? A(to_acc(bias[o0 + o])) : A(0);
        op[o * P] = from_acc<T>(acc[o] + bv);
      }
    }
  }
};

// ---------------------------------------------------------------------------
// Backward: input, offset and mask gradients

template <typename T, bool kDeform>
struct DataGrad {
  const T* __restrict__ grad_out;      // [N, Cout, Ho, Wo]
  const T* __restrict__ x;             // [N, Cin, H, W]
  const T* __restrict__ offset;        // (kDeform)
  const T* __restrict__ mask;          // or null
  const acc_t<T>* __restrict__ wpack;  // PackDataWeights
  acc_t<T>* __restrict__ grad_in;      // [N, Cin, H, W] accumulated atomically (zeroed before), or null
  T* __restrict__ grad_offset;         // [N, 2*G*K, Ho, Wo] or null
  T* __restrict__ grad_mask;           // [N, G*K, Ho, Wo] or null
  DeformConv2dShape s;
  int64_t cig_pad;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    constexpr int CB = std::is_same_v<A, double> ? kDataTile / 2 : kDataTile;  // (float64: no spills)
    const int kw = static_cast<int>(s.kw), K = static_cast<int>(s.kh) * kw;
    const int64_t P = s.Ho * s.Wo, HW = s.H * s.W, G = s.offset_groups;
    const int64_t Cig = s.Cin / s.groups, Cog = s.Cout / s.groups, Cgo = s.Cin / G;
    // idx -> (n, og, t, p), the pixel fastest
    const int64_t p = idx % P, r1 = idx / P, r2 = r1 / K, og = r2 % G, n = r2 / G;
    const int t = static_cast<int>(r1 % K);
    const int64_t ho = p / s.Wo, wo = p % s.Wo;
    const T* offp = kDeform ? offset + (n * 2 * G + 2 * og) * K * P + p : nullptr;
    const A m = mask != nullptr ? A(to_acc(mask[((n * G + og) * K + t) * P + p])) : A(1);
    const Sample<A, kDeform> smp = locate<A, kDeform>(s, offp, P, t, t / kw, t % kw, ho, wo);
    const bool values = grad_offset != nullptr || grad_mask != nullptr;
    A gy = 0, gx = 0, gm = 0;
    if (smp.any) {
      A wm[Sample<A, kDeform>::kCorners];  // corner weight * mask: d sample / d x
#pragma unroll
      for (int k = 0; k < Sample<A, kDeform>::kCorners; ++k) wm[k] = smp.w[k] * m;
      const int64_t ob = og * Cgo, oe = ob + Cgo;
      // runs of the offset group's channels that share a weight group
      for (int64_t c0 = ob; c0 < oe;) {
        const int64_t g = c0 / Cig, c1 = min64(oe, (g + 1) * Cig);
        const int64_t lo = c0 - g * Cig, hi = c1 - g * Cig;
        const T* go = grad_out + (n * s.Cout + g * Cog) * P + p;
        const A* wbase = wpack + (g * K + t) * Cog * cig_pad;
        // tiles aligned to CB in the padded weight rows (aligned vector loads)
        for (int64_t ct = lo - lo % CB; ct < hi; ct += CB) {
          A gc[CB];
#pragma unroll
          for (int k = 0; k < CB; ++k) gc[k] = A(0);
          for (int64_t o = 0; o < Cog; ++o) {
            const A gv = to_acc(go[o * P]);
            A wv[CB];
            load_aligned(wbase + o * cig_pad + ct, wv);
#pragma unroll
            for (int k = 0; k < CB; ++k) gc[k] += wv[k] * gv;
          }
#pragma unroll
          for (int k = 0; k < CB; ++k) {
            const int64_t cl = ct + k;
            if (cl < lo || cl >= hi) continue;
            const int64_t plane = (n * s.Cin + g * Cig + cl) * HW;
            if (values) {
              A v[Sample<A, kDeform>::kCorners];
              smp.load(x + plane, v);
              if constexpr (kDeform) {
                const A hy = A(1) - smp.ly, hx = A(1) - smp.lx;
                gm += gc[k] * (smp.w[0] * v[0] + smp.w[1] * v[1] + smp.w[2] * v[2] + smp.w[3] * v[3]);
                gy += gc[k] * (hx * (v[2] - v[0]) + smp.lx * (v[3] - v[1]));
                gx += gc[k] * (hy * (v[1] - v[0]) + smp.ly * (v[3] - v[2]));
              } else {
                gm += gc[k] * v[0];
              }
            }
            if (grad_in != nullptr) {
#pragma unroll
              for (int q = 0; q < Sample<A, kDeform>::kCorners; ++q)
                if (smp.off[q] >= 0) atomic_add(grad_in + plane + smp.off[q], gc[k] * wm[q]);
            }
          }
        }
        c0 = c1;
      }
    }
    if (grad_offset != nullptr) {
      T* gop = grad_offset + ((n * G + og) * K + t) * 2 * P + p;
      gop[0] = from_acc<T>(gy * m);
      gop[P] = from_acc<T>(gx * m);
    }
    if (grad_mask != nullptr) grad_mask[((n * G + og) * K + t) * P + p] = from_acc<T>(gm);
  }
};

// ---------------------------------------------------------------------------
// Backward: weight and bias gradients

// partial[chunk][o][cl][t] = sum over the chunk's pixels of
// grad_out[n, o, p] * mask * sample(x[n, c], tap t), for a tile of OT output
// channels x CT input channels.
template <typename T, bool kDeform>
struct WeightGrad {
  const T* __restrict__ grad_out;
  const T* __restrict__ x;
  const T* __restrict__ offset;  // (kDeform)
  const T* __restrict__ mask;    // or null
  acc_t<T>* __restrict__ partial;  // [chunks][Cout][Cig*K]
  DeformConv2dShape s;
  int64_t chunk_size, oblocks, ctiles;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    constexpr int OT = kWeightOutTile, CT = kWeightChanTile;
    const int kw = static_cast<int>(s.kw), K = static_cast<int>(s.kh) * kw;
    const int64_t P = s.Ho * s.Wo, HW = s.H * s.W, G = s.offset_groups;
    const int64_t Cig = s.Cin / s.groups, Cog = s.Cout / s.groups, Cgo = s.Cin / G;
    // idx -> (chunk, g, ob, t, ct), channel tile and tap fastest: a warp shares
    // its grad_out reads (uniform) and its pixels
    const int64_t ct = idx % ctiles, r1 = idx / ctiles, r2 = r1 / K, ob = r2 % oblocks, r3 = r2 / oblocks;
    const int64_t g = r3 % s.groups, chunk = r3 / s.groups;
    const int t = static_cast<int>(r1 % K), ti = t / kw, tj = t % kw;
    const int64_t o0 = ob * OT, no = min64(OT, Cog - o0);
    const int64_t cl0 = ct * CT, nc = min64(CT, Cig - cl0);
    A acc[OT][CT];
#pragma unroll
    for (int o = 0; o < OT; ++o)
#pragma unroll
      for (int k = 0; k < CT; ++k) acc[o][k] = A(0);
    const int64_t q0 = chunk * chunk_size, q1 = min64(s.N * P, q0 + chunk_size);
    const int64_t c0 = g * Cig + cl0;
    // runs [ka, kb) of the tile's channels that share an offset group (one run
    // unless the tile straddles an offset-group boundary)
    for (int64_t ka = 0; ka < nc;) {
      const int64_t og = (c0 + ka) / Cgo, kb = min64(nc, (og + 1) * Cgo - c0);
      int64_t n = q0 / P;
      const int32_t Wo = static_cast<int32_t>(s.Wo);
      int32_t p = static_cast<int32_t>(q0 % P), ho = p / Wo, wo = p % Wo;
#pragma unroll 1
      for (int64_t q = q0; q < q1; ++q) {
        const T* offp = kDeform ? offset + (n * 2 * G + 2 * og) * K * P + p : nullptr;
        Sample<A, kDeform> smp = locate<A, kDeform>(s, offp, P, t, ti, tj, ho, wo);
        if (smp.any) {
          if (mask != nullptr) smp.scale(A(to_acc(mask[((n * G + og) * K + t) * P + p])));
          const T* go = grad_out + (n * s.Cout + g * Cog + o0) * P + p;
          A gv[OT];
#pragma unroll
          for (int o = 0; o < OT; ++o) gv[o] = o < no ? A(to_acc(go[o * P])) : A(0);
          const T* xc = x + (n * s.Cin + c0) * HW;
#pragma unroll
          for (int k = 0; k < CT; ++k) {
            if (k < ka || k >= kb) continue;
            const A v = smp.value(xc + k * HW);
#pragma unroll
            for (int o = 0; o < OT; ++o) acc[o][k] += gv[o] * v;
          }
        }
        ++p;
        if (++wo == Wo) {
          wo = 0;
          if (++ho == s.Ho) {
            ho = 0;
            p = 0;
            ++n;
          }
        }
      }
      ka = kb;
    }
    const int64_t CigK = Cig * K;
    A* out = partial + (chunk * s.Cout + g * Cog + o0) * CigK + cl0 * K + t;
#pragma unroll
    for (int o = 0; o < OT; ++o)
#pragma unroll
      for (int k = 0; k < CT; ++k)
        if (o < no && k < nc) out[o * CigK + k * K] = acc[o][k];
  }
};

// partial[chunk][o] = sum over the chunk's pixels of grad_out[n, o, p].
template <typename T>
struct BiasGrad {
  const T* __restrict__ grad_out;
  acc_t<T>* __restrict__ partial;  // [chunks][Cout]
  DeformConv2dShape s;
  int64_t chunk_size;

  DEBLURFAST_HOST_DEVICE void operator()(int64_t idx) const {
    using A = acc_t<T>;
    const int64_t P = s.Ho * s.Wo, o = idx % s.Cout, chunk = idx / s.Cout;
    const int64_t q0 = chunk * chunk_size, q1 = min64(s.N * P, q0 + chunk_size);
    A acc = 0;
    for (int64_t q = q0; q < q1;) {  // image by image
      const int64_t n = q / P, p0 = q % P, p1 = min64(P, p0 + (q1 - q));
      const T* go = grad_out + (n * s.Cout + o) * P;
      for (int64_t p = p0; p < p1; ++p) acc += to_acc(go[p]);
      q += p1 - p0;
    }
    partial[idx] = acc;
  }
};

// ---------------------------------------------------------------------------
// Launch logic

// Calls f(std::integral_constant<int, KH>, std::integral_constant<int, KW>)
// with (3, 3), (5, 5) or the generic (0, 0).
template <typename F>
cudaError_t dispatch_kernel_size(int64_t kh, int64_t kw, F&& f) {
  if (kh == 3 && kw == 3) return f(std::integral_constant<int, 3>{}, std::integral_constant<int, 3>{});
  if (kh == 5 && kw == 5) return f(std::integral_constant<int, 5>{}, std::integral_constant<int, 5>{});
  return f(std::integral_constant<int, 0>{}, std::integral_constant<int, 0>{});
}

template <typename F>
cudaError_t dispatch_bool(bool b, F&& f) {
  if (b) return f(std::true_type{});
  return f(std::false_type{});
}

// offset, mask, bias: null when absent (s.has_*); workspace: forward_workspace bytes.
template <typename Runner>
cudaError_t forward(const Runner& run, DType dtype, const void* input, const void* offset, const void* weight,
                    const void* bias, const void* mask, void* out, void* workspace, const DeformConv2dShape& s,
                    const Plan& plan) {
  if (s.N * s.Cout * s.Ho * s.Wo == 0) return cudaSuccess;
  if (plan.ob != 8 && (plan.ob != 16 || dtype == DType::Float64)) return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    using A = acc_t<T>;
    A* wpack = static_cast<A*>(workspace);
    const PackForwardWeights<T> pack{static_cast<const T*>(weight), wpack, s, plan.blocks, plan.ob};
    if (cudaError_t err = run(pack, s.groups * plan.blocks * s.cin_per_group() * s.taps() * plan.ob);
        err != cudaSuccess)
      return err;
    const int64_t total = s.N * s.groups * plan.blocks * s.out_pixels();
    return dispatch_kernel_size(s.kh, s.kw, [&](auto kh, auto kw) {
      return dispatch_bool(s.has_offset, [&](auto deform) {
        constexpr int KH = decltype(kh)::value, KW = decltype(kw)::value;
        constexpr bool D = decltype(deform)::value;
        const T* x = static_cast<const T*>(input);
        const T* o = static_cast<const T*>(offset);
        const T* m = s.has_mask ? static_cast<const T*>(mask) : nullptr;
        const T* b = s.has_bias ? static_cast<const T*>(bias) : nullptr;
        if constexpr (!std::is_same_v<T, double>)
          if (plan.ob == 16)
            return run(Forward<T, KH, KW, D, 16>{x, o, m, wpack, b, static_cast<T*>(out), s, plan.blocks}, total);
        return run(Forward<T, KH, KW, D, 8>{x, o, m, wpack, b, static_cast<T*>(out), s, plan.blocks}, total);
      });
    });
  });
}

// Gradients not wanted are null; grad_offset / grad_mask / grad_bias must be
// null when the offset / mask / bias is absent. Every gradient passed is fully
// written. workspace: backward_layout(...).total bytes.
template <typename Runner>
cudaError_t backward(const Runner& run, DType dtype, const void* grad_out, const void* input, const void* offset,
                     const void* weight, const void* mask, void* grad_input, void* grad_offset, void* grad_weight,
                     void* grad_bias, void* grad_mask, void* workspace, const DeformConv2dShape& s,
                     const Plan& plan) {
  if ((grad_offset != nullptr && !s.has_offset) || (grad_mask != nullptr && !s.has_mask) ||
      (grad_bias != nullptr && !s.has_bias))
    return cudaErrorInvalidValue;
  const BackwardLayout layout = backward_layout(dtype, s, plan, grad_input != nullptr, grad_offset != nullptr,
                                                grad_weight != nullptr, grad_bias != nullptr, grad_mask != nullptr);
  char* ws = static_cast<char*>(workspace);
  return dispatch_dtype(dtype, [&](auto type) -> cudaError_t {
    using T = typename decltype(type)::type;
    using A = acc_t<T>;
    const T* go = static_cast<const T*>(grad_out);
    const T* x = static_cast<const T*>(input);
    const T* off = s.has_offset ? static_cast<const T*>(offset) : nullptr;
    const T* m = s.has_mask ? static_cast<const T*>(mask) : nullptr;
    const int64_t K = s.taps(), P = s.out_pixels();
    cudaError_t err = cudaSuccess;
    if (grad_input != nullptr || grad_offset != nullptr || grad_mask != nullptr) {
      A* dpack = reinterpret_cast<A*>(ws + layout.data_weights);
      const PackDataWeights<T> pack{static_cast<const T*>(weight), dpack, s, plan.cig_pad};
      if ((err = run(pack, s.groups * K * s.cout_per_group() * plan.cig_pad)) != cudaSuccess) return err;
      A* gin = nullptr;
      const int64_t in_numel = s.N * s.Cin * s.H * s.W;
      if (grad_input != nullptr) {
        gin = std::is_same_v<T, A> ? reinterpret_cast<A*>(grad_input) : reinterpret_cast<A*>(ws + layout.grad_input);
        if ((err = run(Zero<A>{gin}, in_numel)) != cudaSuccess) return err;
      }
      err = dispatch_bool(s.has_offset, [&](auto deform) {
        const DataGrad<T, decltype(deform)::value> f{
            go, x, off, m, dpack, gin, static_cast<T*>(grad_offset), static_cast<T*>(grad_mask), s, plan.cig_pad};
        return run(f, s.N * s.offset_groups * K * P);
      });
      if (err != cudaSuccess) return err;
      if (grad_input != nullptr && !std::is_same_v<T, A>)
        if ((err = run(CastFromAcc<T>{gin, static_cast<T*>(grad_input)}, in_numel)) != cudaSuccess) return err;
    }
    if (grad_weight != nullptr) {
      A* partial = reinterpret_cast<A*>(ws + layout.weight_partial);
      if (plan.chunks > 0) {
        err = dispatch_bool(s.has_offset, [&](auto deform) {
          const WeightGrad<T, decltype(deform)::value> f{go,         x,           off,          m, partial, s,
                                                         plan.chunk_size, plan.w_oblocks, plan.w_ctiles};
          return run(f, plan.chunks * s.groups * plan.w_oblocks * K * plan.w_ctiles);
        });
        if (err != cudaSuccess) return err;
      }
      const int64_t len = s.Cout * s.cin_per_group() * K;
      if ((err = run(ReduceChunks<T>{partial, static_cast<T*>(grad_weight), plan.chunks, len}, len)) != cudaSuccess)
        return err;
    }
    if (grad_bias != nullptr) {
      A* partial = reinterpret_cast<A*>(ws + layout.bias_partial);
      if (plan.chunks > 0)
        if ((err = run(BiasGrad<T>{go, partial, s, plan.chunk_size}, plan.chunks * s.Cout)) != cudaSuccess) return err;
      if ((err = run(ReduceChunks<T>{partial, static_cast<T*>(grad_bias), plan.chunks, s.Cout}, s.Cout)) !=
          cudaSuccess)
        return err;
    }
    return cudaSuccess;
  });
}

}  // namespace deform_conv2d
}  // namespace cuda
}  // namespace deblurfast
