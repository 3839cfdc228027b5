// strip_pool, strip_expand and blur_aware_mask on the CPU (ops.md §4):
// forward and backward, float32/float64.
//
// strip_pool and strip_expand take one (n, c) plane per task and read it once
// (its rows stay in L1 while every size's bins are summed). blur_aware_mask
// goes by tiles of whole rows of one image: the tile's z [F, P] is built from
// the tables, u = weight @ z is one GEMM and the sigmoid, the product with x
// and (backward) the gradients of x and u follow while the tile is in cache.
// Tiles have a fixed size and partial sums (weight, bias, col_table) are added
// in tile order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lane_reduce.h"

namespace deblurfast {
namespace {

// PyTorch's adaptive pooling bin b of n over L positions: [floor(bL/n), ceil((b+1)L/n)).
inline int64_t bin_start(int64_t b, int64_t L, int64_t n) { return (b * L) / n; }
inline int64_t bin_end(int64_t b, int64_t L, int64_t n) { return ((b + 1) * L + n - 1) / n; }

void check_float_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, " (cpu): ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, " (cpu): ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

void check_same(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.device() == like.device(), op, ": ", name,
              " must have the dtype and device of the first input, got ", t.scalar_type(), " on ", t.device());
}

// -- strip_pool: buf [N, C, H*K + K*W], the v maps [H, K] then the h maps [K, W] (K = sum(sizes)) -----------

std::vector<int64_t> checked_sizes(at::IntArrayRef sizes) {
  TORCH_CHECK(!sizes.empty(), "strip_pool: sizes must not be empty");
  for (int64_t n : sizes) TORCH_CHECK(n >= 1, "strip_pool: sizes must be positive, got ", sizes);
  return sizes.vec();
}

template <typename T>
void pool_plane(const T* x, int64_t H, int64_t W, const std::vector<int64_t>& sizes, int64_t K, T* v, T* h) {
  std::fill(h, h + K * W, T(0));
  for (int64_t y = 0; y < H; ++y) {
    const T* row = x + y * W;
    int64_t off = 0;
    for (int64_t n : sizes) {
      for (int64_t b = 0; b < n; ++b) {
        const int64_t s = bin_start(b, W, n), e = bin_end(b, W, n);
        T sum = 0;
        for (int64_t i = s; i < e; ++i) sum += row[i];
        v[y * K + off + b] = sum / T(e - s);
        if (bin_start(b, H, n) <= y && y < bin_end(b, H, n)) {
          T* hrow = h + (off + b) * W;
          for (int64_t i = 0; i < W; ++i) hrow[i] += row[i];
        }
      }
      off += n;
    }
  }
  int64_t off = 0;
  for (int64_t n : sizes) {
    for (int64_t b = 0; b < n; ++b) {
      const T count = T(bin_end(b, H, n) - bin_start(b, H, n));
      T* hrow = h + (off + b) * W;
      for (int64_t i = 0; i < W; ++i) hrow[i] /= count;
    }
    off += n;
  }
}

template <typename T>
void pool_plane_backward(const T* gv, const T* gh, int64_t H, int64_t W, const std::vector<int64_t>& sizes, int64_t K,
                         T* gx) {
  for (int64_t y = 0; y < H; ++y) {
    T* row = gx + y * W;
    std::fill(row, row + W, T(0));
    int64_t off = 0;
    for (int64_t n : sizes) {
      for (int64_t b = 0; b < n; ++b) {
        const int64_t s = bin_start(b, W, n), e = bin_end(b, W, n);
        const T g = gv[y * K + off + b] / T(e - s);
        for (int64_t i = s; i < e; ++i) row[i] += g;
        const int64_t hs = bin_start(b, H, n), he = bin_end(b, H, n);
        if (hs <= y && y < he) {
          const T* grow = gh + (off + b) * W;
          const T count = T(he - hs);
          for (int64_t i = 0; i < W; ++i) row[i] += grow[i] / count;
        }
      }
      off += n;
    }
  }
}

at::Tensor strip_pool_cpu(const at::Tensor& input, at::IntArrayRef sizes_arg) {
  check_float_cpu("strip_pool", "x", input);
  TORCH_CHECK(input.dim() == 4 && input.size(2) >= 1 && input.size(3) >= 1,
              "strip_pool: x must be (N, C, H, W) with H, W >= 1, got shape ", input.sizes());
  const auto sizes = checked_sizes(sizes_arg);
  const at::Tensor x = input.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t K = 0;
  for (int64_t n : sizes) K += n;
  at::Tensor buf = at::empty({N, C, H * K + K * W}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "strip_pool_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* bp = buf.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        scalar_t* out = bp + p * (H * K + K * W);
        pool_plane(xp + p * H * W, H, W, sizes, K, out, out + H * K);
      }
    });
  });
  return buf;
}

at::Tensor strip_pool_backward_cpu(const at::Tensor& grad_buf, const at::Tensor& input, at::IntArrayRef sizes_arg,
                                   std::array<bool, 1> output_mask) {
  check_float_cpu("strip_pool_backward", "x", input);
  check_same("strip_pool_backward", "grad_buf", grad_buf, input);
  const auto sizes = checked_sizes(sizes_arg);
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  int64_t K = 0;
  for (int64_t n : sizes) K += n;
  TORCH_CHECK(grad_buf.sizes() == at::IntArrayRef({N, C, H * K + K * W}), "strip_pool_backward: grad_buf shape ",
              grad_buf.sizes(), " must be (", N, ", ", C, ", ", H * K + K * W, ")");
  if (!output_mask[0]) return input.new_empty({0});
  const at::Tensor g = grad_buf.contiguous();
  at::Tensor gx = at::empty({N, C, H, W}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "strip_pool_backward_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const scalar_t* gv = gp + p * (H * K + K * W);
        pool_plane_backward(gv, gv + H * K, H, W, sizes, K, gxp + p * H * W);
      }
    });
  });
  return gx;
}

// -- strip_expand: out[y, x] = v[y, floor(x nv / W)] + h[floor(y nh / H), x] ----------------------------

std::vector<int64_t> nearest_index(int64_t out_size, int64_t in_size) {
  std::vector<int64_t> idx(out_size);
  for (int64_t i = 0; i < out_size; ++i) idx[i] = (i * in_size) / out_size;
  return idx;
}

// Returns size as (H, W).
std::pair<int64_t, int64_t> check_expand(const char* op, const at::Tensor& v, const at::Tensor& h,
                                         at::IntArrayRef size) {
  check_float_cpu(op, "v", v);
  check_same(op, "h", h, v);
  TORCH_CHECK(size.size() == 2 && size[0] >= 1 && size[1] >= 1, op, ": size must be two positive ints, got ", size);
  const int64_t H = size[0], W = size[1];
  TORCH_CHECK(v.dim() == 4 && v.size(2) == H && v.size(3) >= 1, op, ": v must be (N, C, ", H,
              ", n_v), got shape ", v.sizes());
  TORCH_CHECK(h.dim() == 4 && h.size(0) == v.size(0) && h.size(1) == v.size(1) && h.size(2) >= 1 && h.size(3) == W,
              op, ": h must be (", v.size(0), ", ", v.size(1), ", n_h, ", W, "), got shape ", h.sizes());
  return {H, W};
}

at::Tensor strip_expand_cpu(const at::Tensor& v_in, const at::Tensor& h_in, at::IntArrayRef size) {
  const auto [H, W] = check_expand("strip_expand", v_in, h_in, size);
  const at::Tensor v = v_in.contiguous(), h = h_in.contiguous();
  const int64_t planes = v.size(0) * v.size(1), nv = v.size(3), nh = h.size(2);
  at::Tensor out = at::empty({v.size(0), v.size(1), H, W}, v.options());
  const auto ix = nearest_index(W, nv), iy = nearest_index(H, nh);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "strip_expand_cpu", [&] {
    const scalar_t* vp = v.const_data_ptr<scalar_t>();
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, planes * H, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {  // r = plane * H + y
        const int64_t p = r / H, y = r % H;
        const scalar_t* vrow = vp + r * nv;
        const scalar_t* hrow = hp + (p * nh + iy[y]) * W;
        scalar_t* orow = op + r * W;
        for (int64_t x = 0; x < W; ++x) orow[x] = vrow[ix[x]] + hrow[x];
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> strip_expand_backward_cpu(const at::Tensor& grad_out, const at::Tensor& v,
                                                             const at::Tensor& h, at::IntArrayRef size,
                                                             std::array<bool, 2> output_mask) {
  const auto [H, W] = check_expand("strip_expand_backward", v, h, size);
  check_same("strip_expand_backward", "grad_out", grad_out, v);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({v.size(0), v.size(1), H, W}), "strip_expand_backward: grad_out "
              "shape ", grad_out.sizes(), " must be (", v.size(0), ", ", v.size(1), ", ", H, ", ", W, ")");
  const int64_t planes = v.size(0) * v.size(1), nv = v.size(3), nh = h.size(2);
  at::Tensor gv = output_mask[0] ? at::empty(v.sizes(), v.options()) : v.new_empty({0});
  at::Tensor gh = output_mask[1] ? at::empty(h.sizes(), h.options()) : h.new_empty({0});
  if (!output_mask[0] && !output_mask[1]) return {gv, gh};
  const at::Tensor g = grad_out.contiguous();
  const auto ix = nearest_index(W, nv), iy = nearest_index(H, nh);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "strip_expand_backward_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* gvp = output_mask[0] ? gv.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* ghp = output_mask[1] ? gh.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, planes, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        if (ghp) std::fill(ghp + p * nh * W, ghp + (p + 1) * nh * W, scalar_t(0));
        for (int64_t y = 0; y < H; ++y) {
          const scalar_t* grow = gp + (p * H + y) * W;
          if (gvp) {
            scalar_t* gvrow = gvp + (p * H + y) * nv;
            std::fill(gvrow, gvrow + nv, scalar_t(0));
            for (int64_t x = 0; x < W; ++x) gvrow[ix[x]] += grow[x];
          }
          if (ghp) {
            scalar_t* ghrow = ghp + (p * nh + iy[y]) * W;
            for (int64_t x = 0; x < W; ++x) ghrow[x] += grow[x];
          }
        }
      }
    });
  });
  return {gv, gh};
}

// -- blur_aware_mask --------------------------------------------------------------------------------------

constexpr int64_t kMaskTilePixels = 2048;  // z [F, P] and u [C, P] of a tile stay in L2

struct MaskShape {
  int64_t N, C, H, W, F, KA, KB;
  int64_t rows_per_tile, tiles_per_image;
};

MaskShape mask_shape(const char* op, const at::Tensor& x, const at::Tensor& row_table, const at::Tensor& col_index,
                     const at::Tensor& col_table, const at::Tensor& row_index, const at::Tensor& weight,
                     const c10::optional<at::Tensor>& bias) {
  check_float_cpu(op, "x", x);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"row_table", &row_table},
                         {"col_table", &col_table}, {"weight", &weight}})
    check_same(op, name, *t, x);
  TORCH_CHECK(x.dim() == 4, op, ": x must be (N, C, H, W), got shape ", x.sizes());
  MaskShape s;
  s.N = x.size(0), s.C = x.size(1), s.H = x.size(2), s.W = x.size(3);
  TORCH_CHECK(row_table.dim() == 4 && row_table.size(0) == s.N && row_table.size(2) == s.H, op,
              ": row_table must be (N, F, H, KA), got shape ", row_table.sizes());
  s.F = row_table.size(1), s.KA = row_table.size(3);
  TORCH_CHECK(col_table.dim() == 4 && col_table.size(0) == s.N && col_table.size(1) == s.F &&
                  col_table.size(3) == s.W,
              op, ": col_table must be (N, F, KB, W), got shape ", col_table.sizes());
  s.KB = col_table.size(2);
  TORCH_CHECK(weight.numel() == s.C * s.F && weight.size(0) == s.C, op, ": weight must be (C, F), got shape ",
              weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_same(op, "bias", *bias, x);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.C, op, ": bias must be (C,), got shape ", bias->sizes());
  }
  for (auto [name, t, len] : {std::tuple<const char*, const at::Tensor*, int64_t>{"col_index", &col_index, s.W},
                              {"row_index", &row_index, s.H}}) {
    TORCH_CHECK(t->device().is_cpu() && (t->scalar_type() == at::kInt || t->scalar_type() == at::kLong) &&
                    t->dim() == 1 && t->size(0) == len,
                op, ": ", name, " must be an int32/int64 CPU tensor of shape (", len, ",), got ", t->scalar_type(),
                " of shape ", t->sizes());
  }
  s.rows_per_tile = std::max<int64_t>(1, kMaskTilePixels / std::max<int64_t>(1, s.W));
  s.tiles_per_image = (s.H + s.rows_per_tile - 1) / s.rows_per_tile;
  return s;
}

// Index values as int64, checked against their table's size.
std::vector<int64_t> index_values(const char* op, const char* name, const at::Tensor& t, int64_t bound) {
  const at::Tensor l = t.to(at::kLong).contiguous();
  std::vector<int64_t> v(l.const_data_ptr<int64_t>(), l.const_data_ptr<int64_t>() + l.numel());
  for (int64_t i : v) TORCH_CHECK(i >= 0 && i < bound, op, ": ", name, " values must be in [0, ", bound, "), got ", i);
  return v;
}

at::Tensor wrap(const void* data, at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& opt) {
  return at::from_blob(const_cast<void*>(data), sizes, strides, opt);
}

// weight as [C, F] for at::mm_out, detached: an out= GEMM refuses an argument that requires grad.
at::Tensor gemm_weight(const at::Tensor& weight, const MaskShape& s) {
  return weight.reshape({s.C, s.F}).contiguous().detach();
}

// col_index as runs of columns that read the same row_table entry (BANet's maps: a few long segments),
// so the per-column loops below are contiguous, vectorizable runs instead of gathers and scatters.
struct ColumnRun {
  int64_t begin, end, entry;
};

std::vector<ColumnRun> column_runs(const std::vector<int64_t>& ci) {
  std::vector<ColumnRun> runs;
  for (int64_t x = 0; x < static_cast<int64_t>(ci.size()); ++x) {
    if (runs.empty() || runs.back().entry != ci[x]) runs.push_back({x, x, ci[x]});
    runs.back().end = x + 1;
  }
  return runs;
}

// The tile's z [F, P] (P = rows * W pixels from row y0 of image n).
template <typename T>
void mask_tile_z(const MaskShape& s, const T* row_table, const T* col_table, const std::vector<ColumnRun>& runs,
                 const int64_t* ri, int64_t n, int64_t y0, int64_t rows, T* z) {
  const int64_t P = rows * s.W;
  for (int64_t f = 0; f < s.F; ++f) {
    const T* rt = row_table + (n * s.F + f) * s.H * s.KA;
    const T* ct = col_table + (n * s.F + f) * s.KB * s.W;
    for (int64_t r = 0; r < rows; ++r) {
      const T* rrow = rt + (y0 + r) * s.KA;
      const T* crow = ct + ri[y0 + r] * s.W;
      T* zr = z + f * P + r * s.W;
      for (const ColumnRun& run : runs) {
        const T a = rrow[run.entry];
        for (int64_t x = run.begin; x < run.end; ++x) zr[x] = std::max(a + crow[x], T(0));
      }
    }
  }
}

// u [C, P] = sigmoid(u + bias[c]), by torch's vectorized kernel (one thread: called inside parallel_for).
template <typename T>
void sigmoid_inplace(at::Tensor& u, const T* bias) {
  if (bias) {
    T* up = u.mutable_data_ptr<T>();
    const int64_t C = u.size(0), P = u.size(1);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t q = 0; q < P; ++q) up[c * P + q] += bias[c];
  }
  at::sigmoid_(u);
}

at::Tensor blur_aware_mask_cpu(const at::Tensor& x_in, const at::Tensor& row_table_in, const at::Tensor& col_index,
                               const at::Tensor& col_table_in, const at::Tensor& row_index,
                               const at::Tensor& weight_in, const c10::optional<at::Tensor>& bias_in) {
  const char* op = "blur_aware_mask";
  const MaskShape s = mask_shape(op, x_in, row_table_in, col_index, col_table_in, row_index, weight_in, bias_in);
  const auto ci = index_values(op, "col_index", col_index, s.KA), ri = index_values(op, "row_index", row_index, s.KB);
  const auto runs = column_runs(ci);
  const at::Tensor x = x_in.contiguous(), rt = row_table_in.contiguous(), ct = col_table_in.contiguous(),
                   w = gemm_weight(weight_in, s);
  const at::Tensor b = bias_in.has_value() && bias_in->defined() ? bias_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  const auto opt = x.options();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blur_aware_mask_cpu", [&] {
    using T = scalar_t;
    const T *xp = x.const_data_ptr<T>(), *rtp = rt.const_data_ptr<T>(), *ctp = ct.const_data_ptr<T>(),
            *bp = b.defined() ? b.const_data_ptr<T>() : nullptr;
    T* op_ = out.mutable_data_ptr<T>();
    const at::Tensor wt = w;
    at::parallel_for(0, s.N * s.tiles_per_image, 1, [&](int64_t begin, int64_t end) {
      const int64_t Pmax = s.rows_per_tile * s.W;
      std::vector<T> z(s.F * Pmax), u(s.C * Pmax);
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t n = tile / s.tiles_per_image, y0 = (tile % s.tiles_per_image) * s.rows_per_tile;
        const int64_t rows = std::min(s.rows_per_tile, s.H - y0), P = rows * s.W;
        mask_tile_z(s, rtp, ctp, runs, ri.data(), n, y0, rows, z.data());
        at::Tensor ut = wrap(u.data(), {s.C, P}, {P, 1}, opt);
        at::mm_out(ut, wt, wrap(z.data(), {s.F, P}, {P, 1}, opt));
        sigmoid_inplace(ut, bp);
        for (int64_t c = 0; c < s.C; ++c) {
          const int64_t base = ((n * s.C + c) * s.H + y0) * s.W;
          const T* sc = u.data() + c * P;
          for (int64_t q = 0; q < P; ++q) op_[base + q] = xp[base + q] * sc[q];
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
blur_aware_mask_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x_in, const at::Tensor& row_table_in,
                             const at::Tensor& col_index, const at::Tensor& col_table_in,
                             const at::Tensor& row_index, const at::Tensor& weight_in,
                             const c10::optional<at::Tensor>& bias_in, std::array<bool, 7> output_mask) {
  const char* op = "blur_aware_mask_backward";
  const MaskShape s = mask_shape(op, x_in, row_table_in, col_index, col_table_in, row_index, weight_in, bias_in);
  check_same(op, "grad_out", grad_out, x_in);
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), op, ": grad_out shape ", grad_out.sizes(), " must be x's ",
              x_in.sizes());
  const auto ci = index_values(op, "col_index", col_index, s.KA), ri = index_values(op, "row_index", row_index, s.KB);
  const auto runs = column_runs(ci);
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  // output_mask follows the tensor arguments; the index maps (2 and 4) take no gradient.
  const bool want_x = output_mask[0], want_rt = output_mask[1], want_ct = output_mask[3], want_w = output_mask[5],
             want_b = output_mask[6] && has_bias;
  const bool want_z = want_rt || want_ct;  // the tables' gradients go through z
  const auto opt = x_in.options();
  auto grad_or_empty = [&](bool wanted, at::IntArrayRef sizes) {
    return wanted ? at::zeros(sizes, opt) : at::empty({0}, opt);
  };
  // x's gradient is written whole by the tiles (zeros where there is nothing to write)
  at::Tensor gx = want_x && grad_out.numel() ? at::empty(x_in.sizes(), opt) : grad_or_empty(want_x, x_in.sizes()),
             grt = grad_or_empty(want_rt, row_table_in.sizes()),
             gct = grad_or_empty(want_ct, col_table_in.sizes()), gw = grad_or_empty(want_w, weight_in.sizes()),
             gb = grad_or_empty(want_b, {s.C});
  const at::Tensor none_x = col_index.new_empty({0}), none_y = row_index.new_empty({0});
  if (grad_out.numel() == 0 || !(want_x || want_z || want_w || want_b)) return {gx, grt, none_x, gct, none_y, gw, gb};
  const at::Tensor x = x_in.contiguous(), rt = row_table_in.contiguous(), ct = col_table_in.contiguous(),
                   w = gemm_weight(weight_in, s), go = grad_out.contiguous();
  const at::Tensor b = has_bias ? bias_in->contiguous() : at::Tensor();
  const int64_t tiles = s.N * s.tiles_per_image, Pmax = s.rows_per_tile * s.W;
  // Per-tile partial sums of the weight and bias gradients, added in tile order at the end; the
  // gradient of z (for col_table, whose rows are shared by tiles) is kept whole and reduced per plane.
  at::Tensor gw_parts = want_w ? at::empty({tiles, s.C, s.F}, opt) : at::Tensor();
  at::Tensor gb_parts = want_b ? at::empty({tiles, s.C}, opt) : at::Tensor();
  at::Tensor gz_all = want_ct ? at::empty({s.N, s.F, s.H, s.W}, opt) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blur_aware_mask_backward_cpu", [&] {
    using T = scalar_t;
    const T *xp = x.const_data_ptr<T>(), *rtp = rt.const_data_ptr<T>(), *ctp = ct.const_data_ptr<T>(),
            *bp = has_bias ? b.const_data_ptr<T>() : nullptr, *gop = go.const_data_ptr<T>();
    T* gxp = want_x ? gx.mutable_data_ptr<T>() : nullptr;
    T* grtp = want_rt ? grt.mutable_data_ptr<T>() : nullptr;
    T* gbp = want_b ? gb_parts.mutable_data_ptr<T>() : nullptr;
    T* gzp = want_ct ? gz_all.mutable_data_ptr<T>() : nullptr;
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> z(s.F * Pmax), u(s.C * Pmax), gz(want_z ? s.F * Pmax : 0);
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t n = tile / s.tiles_per_image, y0 = (tile % s.tiles_per_image) * s.rows_per_tile;
        const int64_t rows = std::min(s.rows_per_tile, s.H - y0), P = rows * s.W;
        mask_tile_z(s, rtp, ctp, runs, ri.data(), n, y0, rows, z.data());
        const at::Tensor zt = wrap(z.data(), {s.F, P}, {P, 1}, opt);
        at::Tensor ut = wrap(u.data(), {s.C, P}, {P, 1}, opt);
        at::mm_out(ut, w, zt);
        // u becomes the gradient of u in place; x's gradient is written on the way
        sigmoid_inplace(ut, bp);
        for (int64_t c = 0; c < s.C; ++c) {
          const int64_t base = ((n * s.C + c) * s.H + y0) * s.W;
          T* uc = u.data() + c * P;
          const T* g = gop + base;
          const T* xc = xp + base;
          if (gxp) {  // one pass for both gradients
            T* gxc = gxp + base;
            for (int64_t q = 0; q < P; ++q) {
              const T m = uc[q];
              gxc[q] = g[q] * m;
              uc[q] = g[q] * xc[q] * m * (T(1) - m);
            }
          } else {
            for (int64_t q = 0; q < P; ++q) uc[q] = g[q] * xc[q] * uc[q] * (T(1) - uc[q]);
          }
          if (gbp) gbp[tile * s.C + c] = lane_sum(uc, P);
        }
        if (want_w) {
          at::Tensor part = gw_parts[tile];
          at::mm_out(part, ut, zt.t());
        }
        if (!want_z) continue;
        at::Tensor gzt = wrap(gz.data(), {s.F, P}, {P, 1}, opt);
        at::mm_out(gzt, w.t(), ut);
        for (int64_t f = 0; f < s.F; ++f) {
          T* gzf = gz.data() + f * P;
          const T* zf = z.data() + f * P;
          for (int64_t q = 0; q < P; ++q) gzf[q] = zf[q] > T(0) ? gzf[q] : T(0);
          for (int64_t r = 0; r < rows; ++r) {
            const T* g = gzf + r * s.W;
            if (grtp) {  // the tile owns rows [y0, y0 + rows) of row_table
              T* dst = grtp + ((n * s.F + f) * s.H + y0 + r) * s.KA;
              for (const ColumnRun& run : runs) dst[run.entry] += lane_sum(g + run.begin, run.end - run.begin);
            }
            if (gzp) std::copy(g, g + s.W, gzp + ((n * s.F + f) * s.H + y0 + r) * s.W);
          }
        }
      }
    });
    if (want_ct) {
      T* gctp = gct.mutable_data_ptr<T>();
      at::parallel_for(0, s.N * s.F, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p)
          for (int64_t y = 0; y < s.H; ++y) {
            const T* g = gzp + (p * s.H + y) * s.W;
            T* dst = gctp + (p * s.KB + ri[y]) * s.W;
            for (int64_t xx = 0; xx < s.W; ++xx) dst[xx] += g[xx];
          }
      });
    }
  });
  if (want_w) gw.view({s.C, s.F}).copy_(gw_parts.sum(0));
  if (want_b) gb.copy_(gb_parts.sum(0));
  return {gx, grt, none_x, gct, none_y, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurfast, CPU, m) {
  m.impl("strip_pool", &strip_pool_cpu);
  m.impl("strip_pool_backward", &strip_pool_backward_cpu);
  m.impl("strip_expand", &strip_expand_cpu);
  m.impl("strip_expand_backward", &strip_expand_backward_cpu);
  m.impl("blur_aware_mask", &blur_aware_mask_cpu);
  m.impl("blur_aware_mask_backward", &blur_aware_mask_backward_cpu);
}

}  // namespace deblurfast
