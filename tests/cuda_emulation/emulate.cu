// CPU emulation of deblurfast's CUDA kernels: the functors the GPU runs
// (csrc/cuda/*.cuh), executed item by item in host loops. Built by nvcc as a
// host shared library and driven from tests/test_cuda_emulation.py through
// ctypes, so the CUDA kernels' arithmetic is tested where there is no GPU.
#include "cuda/deform_conv2d.cuh"
#include "cuda/dynamic_filter2d.cuh"

using deblurfast::DType;
using deblurfast::DynamicFilter2dShape;
using deblurfast::PadMode;
namespace df = deblurfast::cuda::dynamic_filter2d;

namespace dc = deblurfast::cuda::deform_conv2d;

namespace {
deblurfast::DeformConv2dShape dc_shape(const int64_t* g) {
  deblurfast::DeformConv2dShape s;
  s.N = g[0];
  s.Cin = g[1];
  s.H = g[2];
  s.W = g[3];
  s.Cout = g[4];
  s.kh = g[5];
  s.kw = g[6];
  s.sh = g[7];
  s.sw = g[8];
  s.ph = g[9];
  s.pw = g[10];
  s.dh = g[11];
  s.dw = g[12];
  s.groups = g[13];
  s.offset_groups = g[14];
  s.has_offset = (g[15] & 1) != 0;
  s.has_mask = (g[15] & 2) != 0;
  s.has_bias = (g[15] & 4) != 0;
  s.Ho = (s.H + 2 * s.ph - s.dh * (s.kh - 1) - 1) / s.sh + 1;
  s.Wo = (s.W + 2 * s.pw - s.dw * (s.kw - 1) - 1) / s.sw + 1;
  return s;
}

DynamicFilter2dShape shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t groups, int64_t k, int64_t dilation,
                           int mode, int softmax) {
  return {N, C, H, W, groups, k, dilation, dilation * (k - 1) / 2, static_cast<PadMode>(mode), softmax != 0};
}
}  // namespace

extern "C" {

// The launch-invariant division of the kernels' index arithmetic: quotients[i] = dividends[i] / divisor.
void emulate_divmod(int64_t divisor, const int64_t* dividends, int64_t* quotients, int64_t count) {
  const deblurfast::cuda::DivMod d(divisor);
  for (int64_t i = 0; i < count; ++i) quotients[i] = d.div(dividends[i]);
}

// min_items sets the channel chunking as on a GPU with min_items / 8192 SMs.
int emulate_dynamic_filter2d_forward(int dtype, const void* input, const void* kernel, void* out, int64_t N,
                                     int64_t C, int64_t H, int64_t W, int64_t groups, int64_t k, int64_t dilation,
                                     int mode, int softmax, int64_t min_items) {
  const DynamicFilter2dShape s = shape(N, C, H, W, groups, k, dilation, mode, softmax);
  return df::forward(deblurfast::cuda::HostRunner{}, static_cast<DType>(dtype), input, kernel, out, s,
                     df::channel_chunks(s, min_items));
}

int64_t emulate_dynamic_filter2d_workspace(int dtype, int64_t N, int64_t C, int64_t H, int64_t W, int64_t groups,
                                           int64_t k, int64_t dilation, int mode, int softmax, int need_grad_input) {
  const DynamicFilter2dShape s = shape(N, C, H, W, groups, k, dilation, mode, softmax);
  return static_cast<int64_t>(df::backward_workspace(static_cast<DType>(dtype), s, need_grad_input != 0));
}

int emulate_dynamic_filter2d_backward(int dtype, const void* grad_out, const void* input, const void* kernel,
                                      void* grad_input, void* grad_kernel, void* workspace, int64_t N, int64_t C,
                                      int64_t H, int64_t W, int64_t groups, int64_t k, int64_t dilation, int mode,
                                      int softmax, int64_t min_items) {
  const DynamicFilter2dShape s = shape(N, C, H, W, groups, k, dilation, mode, softmax);
  return df::backward(deblurfast::cuda::HostRunner{}, static_cast<DType>(dtype), grad_out, input, kernel, grad_input,
                      grad_kernel, workspace, s, df::channel_chunks(s, min_items));
}

// ---- deform_conv2d -------------------------------------------------------
// geometry: int64[16] = N Cin H W Cout kh kw sh sw ph pw dh dw groups G, then
// flags has_offset | has_mask << 1 | has_bias << 2. min_items / min_chunk_pixels
// set the work split as make_plan does on a GPU (csrc/cuda/deform_conv2d.cuh).

int emulate_deform_conv2d_shape(const int64_t* geometry, int64_t* ho_wo) {
  const deblurfast::DeformConv2dShape s = dc_shape(geometry);
  ho_wo[0] = s.Ho;
  ho_wo[1] = s.Wo;
  return 0;
}

int64_t emulate_deform_conv2d_forward_workspace(int dtype, const int64_t* geometry, int64_t min_items) {
  const deblurfast::DeformConv2dShape s = dc_shape(geometry);
  const DType dt = static_cast<DType>(dtype);
  return static_cast<int64_t>(dc::forward_workspace(dt, s, dc::make_plan(dt, s, min_items)));
}

int emulate_deform_conv2d_forward(int dtype, const void* input, const void* offset, const void* weight,
                                  const void* bias, const void* mask, void* out, void* workspace,
                                  const int64_t* geometry, int64_t min_items) {
  const deblurfast::DeformConv2dShape s = dc_shape(geometry);
  const DType dt = static_cast<DType>(dtype);
  return dc::forward(deblurfast::cuda::HostRunner{}, dt, input, offset, weight, bias, mask, out, workspace, s,
                     dc::make_plan(dt, s, min_items));
}

// wanted: bit i set = gradient i of (input, offset, weight, bias, mask) passed.
int64_t emulate_deform_conv2d_backward_workspace(int dtype, const int64_t* geometry, int wanted, int64_t min_items,
                                                 int64_t min_chunk_pixels) {
  const deblurfast::DeformConv2dShape s = dc_shape(geometry);
  const DType dt = static_cast<DType>(dtype);
  return static_cast<int64_t>(dc::backward_layout(dt, s, dc::make_plan(dt, s, min_items, min_chunk_pixels),
                                                  wanted & 1, wanted & 2, wanted & 4, wanted & 8, wanted & 16)
                                  .total);
}

int64_t emulate_deform_conv2d_chunks(int dtype, const int64_t* geometry, int64_t min_items,
                                     int64_t min_chunk_pixels) {
  const deblurfast::DeformConv2dShape s = dc_shape(geometry);
  return dc::make_plan(static_cast<DType>(dtype), s, min_items, min_chunk_pixels).chunks;
}

int emulate_deform_conv2d_backward(int dtype, const void* grad_out, const void* input, const void* offset,
                                   const void* weight, const void* mask, void* grad_input, void* grad_offset,
                                   void* grad_weight, void* grad_bias, void* grad_mask, void* workspace,
                                   const int64_t* geometry, int64_t min_items, int64_t min_chunk_pixels) {
  const deblurfast::DeformConv2dShape s = dc_shape(geometry);
  const DType dt = static_cast<DType>(dtype);
  return dc::backward(deblurfast::cuda::HostRunner{}, dt, grad_out, input, offset, weight, mask, grad_input,
                      grad_offset, grad_weight, grad_bias, grad_mask, workspace, s,
                      dc::make_plan(dt, s, min_items, min_chunk_pixels));
}

}  // extern "C"
