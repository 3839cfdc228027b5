// dynamic_filter2d on the CPU (ops.md §2): forward and backward, float32/float64.
//
// Work is split by image row: the forward and the kernel gradient take one
// (n, group, row) per task, the input gradient one (n, channel, row). Each task
// owns the rows it writes, so no task races another and results do not depend
// on the thread count. The inner loops run along a row, where the taps are a
// plain shifted read; only the `pad` columns at each border go through the
// padding map.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dynamic_filter2d_args.h"

namespace deblurfast {
namespace {

// Column geometry of tap column j for rows of width W: inside [lo, hi) the
// sample is at w + off; elsewhere it is src[w] (-1: zero).
struct TapColumns {
  int64_t k, W;
  std::vector<int64_t> off, lo, hi, src;

  TapColumns(const DynamicFilter2dShape& s) : k(s.kernel_size), W(s.W), off(k), lo(k), hi(k), src(k * s.W) {
    for (int64_t j = 0; j < k; ++j) {
      off[j] = j * s.dilation - s.pad;
      lo[j] = std::min(W, std::max<int64_t>(0, -off[j]));
      hi[j] = std::max(lo[j], std::min(W, W - off[j]));
      for (int64_t w = 0; w < W; ++w) src[j * W + w] = pad_source(w + off[j], W, s.mode);
    }
  }
};

// out[w] += a[w] * x[column w of tap j]
template <typename T>
inline void add_tap_product(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ x,
                            const TapColumns& cols, int64_t j) {
  const int64_t off = cols.off[j], lo = cols.lo[j], hi = cols.hi[j], W = cols.W;
  const int64_t* src = cols.src.data() + j * W;
  for (int64_t w = 0; w < lo; ++w)
    if (src[w] >= 0) out[w] += a[w] * x[src[w]];
  for (int64_t w = lo; w < hi; ++w) out[w] += a[w] * x[w + off];
  for (int64_t w = hi; w < W; ++w)
    if (src[w] >= 0) out[w] += a[w] * x[src[w]];
}

// Writes the k*k taps of one kernel row, softmax-normalized if asked, to
// wbuf[t * W + w]. `krow` points at kernel[n, g*k*k, h, 0].
template <typename T>
void load_taps(const T* krow, int64_t plane, int64_t W, int64_t K2, bool softmax, T* wbuf) {
  for (int64_t t = 0; t < K2; ++t) std::copy(krow + t * plane, krow + t * plane + W, wbuf + t * W);
  if (!softmax) return;
  for (int64_t w = 0; w < W; ++w) {
    T m = wbuf[w];
    for (int64_t t = 1; t < K2; ++t) m = std::max(m, wbuf[t * W + w]);
    T sum = 0;
    for (int64_t t = 0; t < K2; ++t) {
      const T e = std::exp(wbuf[t * W + w] - m);
      wbuf[t * W + w] = e;
      sum += e;
    }
    for (int64_t t = 0; t < K2; ++t) wbuf[t * W + w] /= sum;
  }
}

template <typename T>
void forward_kernel(const T* x, const T* kernel, T* out, const DynamicFilter2dShape& s) {
  const int64_t K2 = s.taps(), Cg = s.channels_per_group(), plane = s.H * s.W, W = s.W;
  const TapColumns cols(s);
  at::parallel_for(0, s.N * s.groups * s.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> wbuf(K2 * W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task % s.H, ng = task / s.H, n = ng / s.groups, g = ng % s.groups;
      load_taps(kernel + (ng * K2) * plane + h * W, plane, W, K2, s.softmax, wbuf.data());
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const T* xc = x + (n * s.C + c) * plane;
        T* orow = out + (n * s.C + c) * plane + h * W;
        std::fill(orow, orow + W, T(0));
        for (int64_t i = 0; i < s.kernel_size; ++i) {
          const int64_t r = pad_source(h + i * s.dilation - s.pad, s.H, s.mode);
          if (r < 0) continue;
          for (int64_t j = 0; j < s.kernel_size; ++j)
            add_tap_product(orow, wbuf.data() + (i * s.kernel_size + j) * W, xc + r * W, cols, j);
        }
      }
    }
  });
}

// grad_kernel, and the softmax-normalized taps `probs` that the input gradient
// reads (only when softmax and probs != nullptr).
template <typename T>
void kernel_grad_kernel(const T* grad_out, const T* x, const T* kernel, T* grad_kernel, T* probs,
                        const DynamicFilter2dShape& s) {
  const int64_t K2 = s.taps(), Cg = s.channels_per_group(), plane = s.H * s.W, W = s.W;
  const TapColumns cols(s);
  at::parallel_for(0, s.N * s.groups * s.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> gw(K2 * W), p(K2 * W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task % s.H, ng = task / s.H, n = ng / s.groups, g = ng % s.groups;
      const int64_t row0 = (ng * K2) * plane + h * W;  // [n, g*K2, h, 0]
      if (s.softmax) load_taps(kernel + row0, plane, W, K2, true, p.data());
      if (probs != nullptr)
        for (int64_t t = 0; t < K2; ++t) std::copy(p.data() + t * W, p.data() + (t + 1) * W, probs + row0 + t * plane);
      if (grad_kernel == nullptr) continue;
      // gw[t][w] = sum over the group's channels of grad_out * the sample tap t read
      std::fill(gw.begin(), gw.end(), T(0));
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const T* xc = x + (n * s.C + c) * plane;
        const T* gorow = grad_out + (n * s.C + c) * plane + h * W;
        for (int64_t i = 0; i < s.kernel_size; ++i) {
          const int64_t r = pad_source(h + i * s.dilation - s.pad, s.H, s.mode);
          if (r < 0) continue;
          for (int64_t j = 0; j < s.kernel_size; ++j)
            add_tap_product(gw.data() + (i * s.kernel_size + j) * W, gorow, xc + r * W, cols, j);
        }
      }
      if (s.softmax) {  // d softmax: p * (gw - sum_t p * gw)
        for (int64_t w = 0; w < W; ++w) {
          T dot = 0;
          for (int64_t t = 0; t < K2; ++t) dot += p[t * W + w] * gw[t * W + w];
          for (int64_t t = 0; t < K2; ++t) gw[t * W + w] = p[t * W + w] * (gw[t * W + w] - dot);
        }
      }
      for (int64_t t = 0; t < K2; ++t) std::copy(gw.data() + t * W, gw.data() + (t + 1) * W, grad_kernel + row0 + t * plane);
    }
  });
}

// grad_input[n, c, y, :] gathers grad_out * tap weight from every output pixel
// that read row y, through each of y's padding preimages.
template <typename T>
void input_grad_kernel(const T* grad_out, const T* taps, T* grad_in, const DynamicFilter2dShape& s) {
  const int64_t K2 = s.taps(), Cg = s.channels_per_group(), plane = s.H * s.W, W = s.W, k = s.kernel_size;
  at::parallel_for(0, s.N * s.C * s.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t y = task % s.H, nc = task / s.H, n = nc / s.C, g = (nc % s.C) / Cg;
      T* girow = grad_in + nc * plane + y * W;
      std::fill(girow, girow + W, T(0));
      const Preimages rows = pad_preimages(y, s.H, s.pad, s.mode);
      for (int r = 0; r < rows.n; ++r)
        for (int64_t q = rows.lo[r]; q <= rows.hi[r]; ++q)
          for (int64_t i = 0; i < k; ++i) {
            const int64_t h = q + s.pad - i * s.dilation;  // the output row whose tap row i read q
            if (h < 0 || h >= s.H) continue;
            const T* gorow = grad_out + nc * plane + h * W;
            for (int64_t j = 0; j < k; ++j) {
              const T* trow = taps + ((n * s.groups + g) * K2 + i * k + j) * plane + h * W;
              const int64_t off = s.pad - j * s.dilation;  // output column = x + off
              const int64_t lo = std::min(W, std::max<int64_t>(0, -off)), hi = std::max(lo, std::min(W, W - off));
              for (int64_t x = lo; x < hi; ++x) girow[x] += trow[x + off] * gorow[x + off];
              // Columns read through the padding: padded column qx feeds image column pad_source(qx).
              if (s.mode == PadMode::Zeros) continue;
              auto add_padded = [&](int64_t qx) {
                const int64_t w = qx + off;
                if (w >= 0 && w < W) girow[pad_source(qx, W, s.mode)] += trow[w] * gorow[w];
              };
              for (int64_t qx = -s.pad; qx < 0; ++qx) add_padded(qx);
              for (int64_t qx = W; qx < W + s.pad; ++qx) add_padded(qx);
            }
          }
    }
  });
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "dynamic_filter2d (cpu): ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "dynamic_filter2d (cpu): ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

at::Tensor dynamic_filter2d_cpu(const at::Tensor& input, const at::Tensor& kernel, int64_t kernel_size,
                                int64_t dilation, c10::string_view padding_mode, bool softmax) {
  const DynamicFilter2dShape s = dynamic_filter2d_shape(input, kernel, kernel_size, dilation, padding_mode, softmax);
  check_cpu(input, "input");
  const at::Tensor x = input.contiguous(), k = kernel.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_filter2d_cpu", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(), s);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> dynamic_filter2d_backward_cpu(const at::Tensor& grad_output,
                                                                 const at::Tensor& input, const at::Tensor& kernel,
                                                                 int64_t kernel_size, int64_t dilation,
                                                                 c10::string_view padding_mode, bool softmax,
                                                                 std::array<bool, 2> output_mask) {
  const DynamicFilter2dShape s = dynamic_filter2d_shape(input, kernel, kernel_size, dilation, padding_mode, softmax);
  check_cpu(input, "input");
  check_grad_output(grad_output, input);
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous(), k = kernel.contiguous();
  // Every element of a requested gradient is written by the kernels below
  // (with no input channels, the kernel gradient is all zero).
  at::Tensor grad_in = output_mask[0] ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_k = output_mask[1] ? at::empty_like(k) : at::empty({0}, k.options());
  if (x.numel() == 0) return {grad_in, grad_k.zero_()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_filter2d_backward_cpu", [&] {
    // The input gradient needs the normalized taps; without softmax they are the kernel itself.
    at::Tensor probs = (output_mask[0] && softmax) ? at::empty_like(k) : at::Tensor();
    if (output_mask[1] || probs.defined()) {
      kernel_grad_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                   k.const_data_ptr<scalar_t>(),
                                   output_mask[1] ? grad_k.mutable_data_ptr<scalar_t>() : nullptr,
                                   probs.defined() ? probs.mutable_data_ptr<scalar_t>() : nullptr, s);
    }
    if (output_mask[0]) {
      const at::Tensor& taps = probs.defined() ? probs : k;
      input_grad_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), taps.const_data_ptr<scalar_t>(),
                                  grad_in.mutable_data_ptr<scalar_t>(), s);
    }
  });
  return {grad_in, grad_k};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurfast, CPU, m) {
  m.impl("dynamic_filter2d", &dynamic_filter2d_cpu);
  m.impl("dynamic_filter2d_backward", &dynamic_filter2d_backward_cpu);
}

}  // namespace deblurfast
