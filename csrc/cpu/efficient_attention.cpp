// efficient_attention on the CPU (ops.md §3): forward and backward, float32/float64.
//
// Context pass (split softmax): the Lin positions of each image are cut into a
// fixed number of chunks, one task each. A task walks its chunk in blocks,
// keeps a running max and sum of exp per key map, and accumulates
// value_block @ exp(key_block - max)^T into its partial context (rescaled when
// the max grows). The partials are combined with their maxima in chunk order,
// so the result does not depend on the thread count.
//
// Output pass (fused): per block of output positions, the softmax of the query
// over its C2 maps is formed in a [C2, B] buffer and (gate * ctx) @ softmax is
// written straight into the output. The backward recomputes the context and
// walks the output positions, then the input positions, the same way; the only
// reduction over positions (the gradient of gate * ctx) again goes by chunks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lane_reduce.h"

namespace deblurfast {
namespace {

constexpr int64_t kBlock = 512;         // positions per GEMM block
constexpr int64_t kChunkPositions = 4096;  // target positions per chunk of a reduction
constexpr int64_t kMaxChunks = 64;

struct AttentionShape {
  int64_t N, C, C2, Lin, Lout;

  // More than one: a multiple of 8, so that 2, 4 or 8 threads get equal shares (15 chunks on 2 threads
  // left one idle for a fifteenth of the pass).
  int64_t chunks(int64_t L) const {
    const int64_t c = (L + kChunkPositions - 1) / kChunkPositions;
    return c <= 1 ? 1 : std::min(kMaxChunks, (c + 7) / 8 * 8);
  }
};

int64_t positions(const at::Tensor& t) {
  int64_t l = 1;
  for (int64_t d = 2; d < t.dim(); ++d) l *= t.size(d);
  return l;
}

AttentionShape attention_shape(const char* op, const at::Tensor& value, const at::Tensor& key, const at::Tensor& query,
                               const c10::optional<at::Tensor>& gate) {
  TORCH_CHECK(value.device().is_cpu(), op, " (cpu): value must be a CPU tensor, got ", value.device());
  TORCH_CHECK(value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble, op,
              " (cpu): value must be float32 or float64, got ", value.scalar_type());
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"key", &key}, {"query", &query}}) {
    TORCH_CHECK(t->scalar_type() == value.scalar_type() && t->device() == value.device(), op, ": ", name,
                " must have value's dtype and device, got ", t->scalar_type(), " on ", t->device());
    TORCH_CHECK(t->dim() == 3 || t->dim() == 4, op, ": ", name, " must be 3-D or 4-D, got shape ", t->sizes());
  }
  TORCH_CHECK(value.dim() == 3 || value.dim() == 4, op, ": value must be 3-D or 4-D, got shape ", value.sizes());
  AttentionShape s{value.size(0), value.size(1), key.size(1), positions(value), positions(query)};
  TORCH_CHECK(key.size(0) == s.N && positions(key) == s.Lin, op, ": key must be (N, C2, Lin) with N = ", s.N,
              " and Lin = ", s.Lin, ", got shape ", key.sizes());
  TORCH_CHECK(query.size(0) == s.N && query.size(1) == s.C2, op, ": query must be (", s.N, ", ", s.C2,
              ", ...), got shape ", query.sizes());
  if (gate.has_value() && gate->defined()) {
    TORCH_CHECK(gate->scalar_type() == value.scalar_type() && gate->device() == value.device(), op,
                ": gate must have value's dtype and device");
    TORCH_CHECK(gate->dim() == 2 && gate->size(0) == s.N && gate->size(1) == s.C, op, ": gate must be (", s.N, ", ",
                s.C, "), got shape ", gate->sizes());
  }
  return s;
}

at::Tensor wrap(const void* data, at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& opt) {
  return at::from_blob(const_cast<void*>(data), sizes, strides, opt);
}

// exp(y) = 2^(y log2 e): the callers form x = y * kLog2e, and x = 2^x for n elements here (one thread: called
// inside parallel_for). torch's exp2 is its own vectorized kernel; its exp goes to MKL's VML, which opens an
// OpenMP region per call (16K floats: 11 us against 18 on this machine, 1.6x).
template <typename T>
constexpr T kLog2e = T(1.44269504088896340735992468100189214);

template <typename T>
void exp2_inplace(T* x, int64_t n, const at::TensorOptions& opt) {
  at::Tensor t = wrap(x, {n}, {1}, opt);
  at::exp2_(t);
}

// ctx [N, C, C2] = value @ softmax_over_positions(key)^T, and the key's max [N, C2] and sum of
// exp(key - max) [N, C2].
template <typename T>
void context(const AttentionShape& s, const T* v, const T* k, const at::TensorOptions& opt, at::Tensor& ctx,
             at::Tensor& kmax, at::Tensor& ksum) {
  const int64_t L = s.Lin, chunks = s.chunks(L), per_chunk = (L + chunks - 1) / chunks;
  at::Tensor parts = at::zeros({s.N, chunks, s.C, s.C2}, opt);
  std::vector<T> m(s.N * chunks * s.C2, -std::numeric_limits<T>::infinity()), sum(s.N * chunks * s.C2, T(0));
  at::parallel_for(0, s.N * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> e(s.C2 * kBlock), scale(s.C2);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / chunks, i0 = (task % chunks) * per_chunk, i1 = std::min(L, i0 + per_chunk);
      T* tm = m.data() + task * s.C2;
      T* ts = sum.data() + task * s.C2;
      at::Tensor part = parts[n][task % chunks];
      T* pp = part.mutable_data_ptr<T>();
      for (int64_t b0 = i0; b0 < i1; b0 += kBlock) {
        const int64_t B = std::min(kBlock, i1 - b0);
        bool rescale = false;
        for (int64_t c2 = 0; c2 < s.C2; ++c2) {
          const T* kr = k + (n * s.C2 + c2) * L + b0;
          const T bm = lane_max(kr, B, tm[c2]);
          scale[c2] = bm > tm[c2] ? std::exp(tm[c2] - bm) : T(1);
          rescale |= scale[c2] != T(1);
          tm[c2] = bm;
          T* er = e.data() + c2 * B;
          for (int64_t i = 0; i < B; ++i) er[i] = (kr[i] - bm) * kLog2e<T>;
        }
        exp2_inplace(e.data(), s.C2 * B, opt);
        for (int64_t c2 = 0; c2 < s.C2; ++c2) ts[c2] = ts[c2] * scale[c2] + lane_sum(e.data() + c2 * B, B);
        if (rescale)
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t c2 = 0; c2 < s.C2; ++c2) pp[c * s.C2 + c2] *= scale[c2];
        part.addmm_(wrap(v + n * s.C * L + b0, {s.C, B}, {L, 1}, opt), wrap(e.data(), {B, s.C2}, {1, B}, opt));
      }
    }
  });
  ctx = at::empty({s.N, s.C, s.C2}, opt);
  kmax = at::empty({s.N, s.C2}, opt);
  ksum = at::empty({s.N, s.C2}, opt);
  T *cp = ctx.mutable_data_ptr<T>(), *mp = kmax.mutable_data_ptr<T>(), *sp = ksum.mutable_data_ptr<T>();
  const T* pp = parts.const_data_ptr<T>();
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c2 = 0; c2 < s.C2; ++c2) {
      T M = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < chunks; ++j) M = std::max(M, m[(n * chunks + j) * s.C2 + c2]);
      T S = 0;
      std::vector<T> w(chunks);
      for (int64_t j = 0; j < chunks; ++j) {
        const T mj = m[(n * chunks + j) * s.C2 + c2];
        w[j] = mj == -std::numeric_limits<T>::infinity() && M != mj ? T(0) : std::exp(mj - M);
        S += sum[(n * chunks + j) * s.C2 + c2] * w[j];
      }
      mp[n * s.C2 + c2] = M;
      sp[n * s.C2 + c2] = S;
      for (int64_t c = 0; c < s.C; ++c) {
        T acc = 0;
        for (int64_t j = 0; j < chunks; ++j) acc += pp[((n * chunks + j) * s.C + c) * s.C2 + c2] * w[j];
        cp[(n * s.C + c) * s.C2 + c2] = acc / S;
      }
    }
}

// sq [C2, B] = softmax over the C2 maps of query columns [j0, j0 + B) of image n.
template <typename T>
void query_softmax(const AttentionShape& s, const T* q, int64_t n, int64_t j0, int64_t B, T* sq,
                   const at::TensorOptions& opt) {
  const T* qn = q + n * s.C2 * s.Lout + j0;
  std::vector<T> mx(B, -std::numeric_limits<T>::infinity()), sm(B, T(0));
  for (int64_t c2 = 0; c2 < s.C2; ++c2)
    for (int64_t j = 0; j < B; ++j) mx[j] = std::max(mx[j], qn[c2 * s.Lout + j]);
  for (int64_t c2 = 0; c2 < s.C2; ++c2)
    for (int64_t j = 0; j < B; ++j) sq[c2 * B + j] = (qn[c2 * s.Lout + j] - mx[j]) * kLog2e<T>;
  exp2_inplace(sq, s.C2 * B, opt);
  for (int64_t c2 = 0; c2 < s.C2; ++c2)
    for (int64_t j = 0; j < B; ++j) sm[j] += sq[c2 * B + j];
  for (int64_t j = 0; j < B; ++j) sm[j] = T(1) / sm[j];
  for (int64_t c2 = 0; c2 < s.C2; ++c2)
    for (int64_t j = 0; j < B; ++j) sq[c2 * B + j] *= sm[j];
}

std::vector<int64_t> output_shape(const at::Tensor& value, const at::Tensor& query) {
  std::vector<int64_t> shape{value.size(0), value.size(1)};
  for (int64_t d = 2; d < query.dim(); ++d) shape.push_back(query.size(d));
  return shape;
}

at::Tensor efficient_attention_cpu(const at::Tensor& value_in, const at::Tensor& key_in, const at::Tensor& query_in,
                                   const c10::optional<at::Tensor>& gate_in) {
  const AttentionShape s = attention_shape("efficient_attention", value_in, key_in, query_in, gate_in);
  const auto opt = value_in.options();
  at::Tensor out = at::empty(output_shape(value_in, query_in), opt);
  if (out.numel() == 0) return out;
  if (s.Lin == 0 || s.C2 == 0) return out.zero_();  // an empty context, as the reference's bmm gives
  const at::Tensor v = value_in.contiguous(), k = key_in.contiguous(), q = query_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "efficient_attention_cpu", [&] {
    using T = scalar_t;
    at::Tensor ctx, kmax, ksum;
    context<T>(s, v.const_data_ptr<T>(), k.const_data_ptr<T>(), opt, ctx, kmax, ksum);
    if (gate_in.has_value() && gate_in->defined()) ctx.mul_(gate_in->detach().unsqueeze(2));  // detached: out= GEMMs refuse tensors that require grad
    const T* qp = q.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    const int64_t blocks = (s.Lout + kBlock - 1) / kBlock;
    at::parallel_for(0, s.N * blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> sq(s.C2 * kBlock);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / blocks, j0 = (task % blocks) * kBlock, B = std::min(kBlock, s.Lout - j0);
        query_softmax(s, qp, n, j0, B, sq.data(), opt);
        at::Tensor o = wrap(op + n * s.C * s.Lout + j0, {s.C, B}, {s.Lout, 1}, opt);
        at::mm_out(o, ctx[n], wrap(sq.data(), {s.C2, B}, {B, 1}, opt));
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> efficient_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& value_in, const at::Tensor& key_in, const at::Tensor& query_in,
    const c10::optional<at::Tensor>& gate_in, std::array<bool, 4> output_mask) {
  const char* op = "efficient_attention_backward";
  const AttentionShape s = attention_shape(op, value_in, key_in, query_in, gate_in);
  const bool has_gate = gate_in.has_value() && gate_in->defined();
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(output_shape(value_in, query_in)), op, ": grad_out shape ",
              grad_out.sizes(), " must be the output's");
  TORCH_CHECK(grad_out.scalar_type() == value_in.scalar_type() && grad_out.device() == value_in.device(), op,
              ": grad_out must have value's dtype and device");
  const auto opt = value_in.options();
  const bool want_v = output_mask[0], want_k = output_mask[1], want_q = output_mask[2],
             want_g = output_mask[3] && has_gate;
  // Every element of a wanted gradient is written below, except when nothing flows (zeros then).
  auto grad_or_empty = [&](bool wanted, at::IntArrayRef sizes) {
    return at::empty(wanted ? sizes : at::IntArrayRef{0}, opt);
  };
  at::Tensor gv = grad_or_empty(want_v, value_in.sizes()), gk = grad_or_empty(want_k, key_in.sizes()),
             gq = grad_or_empty(want_q, query_in.sizes()), gg = grad_or_empty(want_g, {s.N, s.C});
  if (grad_out.numel() == 0 || s.Lin == 0 || s.C2 == 0 || !(want_v || want_k || want_q || want_g)) {
    for (at::Tensor* t : {&gv, &gk, &gq, &gg}) t->zero_();
    return {gv, gk, gq, gg};
  }
  const at::Tensor v = value_in.contiguous(), k = key_in.contiguous(), q = query_in.contiguous(),
                   go = grad_out.contiguous();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "efficient_attention_backward_cpu", [&] {
    using T = scalar_t;
    const T *vp = v.const_data_ptr<T>(), *kp = k.const_data_ptr<T>(), *qp = q.const_data_ptr<T>(),
            *gop = go.const_data_ptr<T>();
    at::Tensor ctx, kmax, ksum;
    context<T>(s, vp, kp, opt, ctx, kmax, ksum);
    const at::Tensor gate = has_gate ? gate_in->detach().unsqueeze(2) : at::Tensor();
    const at::Tensor A = has_gate ? ctx * gate : ctx;  // out = A @ softmax(query)
    const bool want_A = want_v || want_k || want_g;
    // Output positions: the query's gradient, and chunk partials of grad_A = grad_out @ softmax(query)^T.
    const int64_t chunks = s.chunks(s.Lout), per_chunk = (s.Lout + chunks - 1) / chunks;
    at::Tensor gA_parts = want_A ? at::zeros({s.N, chunks, s.C, s.C2}, opt) : at::Tensor();
    T* gqp = want_q ? gq.mutable_data_ptr<T>() : nullptr;
    at::parallel_for(0, s.N * chunks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> sq(s.C2 * kBlock), gsq(want_q ? s.C2 * kBlock : 0), dot(kBlock);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / chunks, i0 = (task % chunks) * per_chunk, i1 = std::min(s.Lout, i0 + per_chunk);
        for (int64_t j0 = i0; j0 < i1; j0 += kBlock) {
          const int64_t B = std::min(kBlock, i1 - j0);
          query_softmax(s, qp, n, j0, B, sq.data(), opt);
          const at::Tensor g = wrap(gop + n * s.C * s.Lout + j0, {s.C, B}, {s.Lout, 1}, opt);
          const at::Tensor sqt = wrap(sq.data(), {s.C2, B}, {B, 1}, opt);
          if (want_A) {
            at::Tensor part = gA_parts[n][task % chunks];
            part.addmm_(g, sqt.t());
          }
          if (!want_q) continue;
          at::Tensor gsqt = wrap(gsq.data(), {s.C2, B}, {B, 1}, opt);
          at::mm_out(gsqt, A[n].t(), g);
          std::fill(dot.begin(), dot.begin() + B, T(0));
          for (int64_t c2 = 0; c2 < s.C2; ++c2)
            for (int64_t j = 0; j < B; ++j) dot[j] += sq[c2 * B + j] * gsq[c2 * B + j];
          for (int64_t c2 = 0; c2 < s.C2; ++c2) {
            T* dst = gqp + (n * s.C2 + c2) * s.Lout + j0;
            for (int64_t j = 0; j < B; ++j) dst[j] = sq[c2 * B + j] * (gsq[c2 * B + j] - dot[j]);
          }
        }
      }
    });
    if (!want_A) return;
    const at::Tensor gA = gA_parts.sum(1);  // [N, C, C2], chunks added in order
    if (want_g) gg.copy_((gA * ctx).sum(2));
    if (!(want_v || want_k)) return;
    const at::Tensor gctx = (has_gate ? gA * gate : gA).contiguous();
    const at::Tensor dotk = (gctx * ctx).sum(1).contiguous();  // [N, C2]: sum_i softmax(key) * its gradient
    const T *mp = kmax.const_data_ptr<T>(), *sp = ksum.const_data_ptr<T>(), *dp = dotk.const_data_ptr<T>();
    T* gvp = want_v ? gv.mutable_data_ptr<T>() : nullptr;
    T* gkp = want_k ? gk.mutable_data_ptr<T>() : nullptr;
    const int64_t blocks = (s.Lin + kBlock - 1) / kBlock;
    at::parallel_for(0, s.N * blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> sk(s.C2 * kBlock), gsk(want_k ? s.C2 * kBlock : 0);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / blocks, i0 = (task % blocks) * kBlock, B = std::min(kBlock, s.Lin - i0);
        for (int64_t c2 = 0; c2 < s.C2; ++c2) {
          const T* kr = kp + (n * s.C2 + c2) * s.Lin + i0;
          const T M = mp[n * s.C2 + c2];
          for (int64_t i = 0; i < B; ++i) sk[c2 * B + i] = (kr[i] - M) * kLog2e<T>;
        }
        exp2_inplace(sk.data(), s.C2 * B, opt);
        for (int64_t c2 = 0; c2 < s.C2; ++c2) {
          const T inv = T(1) / sp[n * s.C2 + c2];
          for (int64_t i = 0; i < B; ++i) sk[c2 * B + i] *= inv;
        }
        const at::Tensor skt = wrap(sk.data(), {s.C2, B}, {B, 1}, opt);
        if (gvp) {
          at::Tensor dst = wrap(gvp + n * s.C * s.Lin + i0, {s.C, B}, {s.Lin, 1}, opt);
          at::mm_out(dst, gctx[n], skt);
        }
        if (!gkp) continue;
        at::Tensor gskt = wrap(gsk.data(), {s.C2, B}, {B, 1}, opt);
        at::mm_out(gskt, gctx[n].t(), wrap(vp + n * s.C * s.Lin + i0, {s.C, B}, {s.Lin, 1}, opt));
        for (int64_t c2 = 0; c2 < s.C2; ++c2) {
          T* dst = gkp + (n * s.C2 + c2) * s.Lin + i0;
          const T d = dp[n * s.C2 + c2];
          for (int64_t i = 0; i < B; ++i) dst[i] = sk[c2 * B + i] * (gsk[c2 * B + i] - d);
        }
      }
    });
  });
  return {gv, gk, gq, gg};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurfast, CPU, m) {
  m.impl("efficient_attention", &efficient_attention_cpu);
  m.impl("efficient_attention_backward", &efficient_attention_backward_cpu);
}

}  // namespace deblurfast
