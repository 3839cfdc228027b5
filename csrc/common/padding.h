// Padding arithmetic shared by the CPU (C++) and CUDA kernels. No torch headers:
// this file is compiled by g++ and by nvcc alike.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DEBLURFAST_HD __host__ __device__ __forceinline__
#else
#define DEBLURFAST_HD inline
#endif

namespace deblurfast {

// Same meaning as torch.nn.functional.pad's modes.
enum class PadMode : int { Zeros = 0, Reflect = 1, Replicate = 2 };

// Image index read at (possibly outside) coordinate q of an axis of length L,
// or -1 where the padded input holds zero. Reflect needs pad < L, which the
// callers validate, so one reflection always lands inside.
DEBLURFAST_HD int64_t pad_source(int64_t q, int64_t L, PadMode mode) {
  if (q >= 0 && q < L) return q;
  if (mode == PadMode::Zeros) return -1;
  if (mode == PadMode::Replicate) return q < 0 ? 0 : L - 1;
  return q < 0 ? -q : 2 * (L - 1) - q;
}

// The coordinates q in [-pad, L - 1 + pad] with pad_source(q) == y, as at most
// three closed intervals: the backward pass gathers its gradient from them.
struct Preimages {
  int n;
  int64_t lo[3];
  int64_t hi[3];
};

DEBLURFAST_HD Preimages pad_preimages(int64_t y, int64_t L, int64_t pad, PadMode mode) {
  // Both optional intervals are computed, then packed into slots 1 and 2 with constant indices: a
  // slot written at a runtime index would put the struct in a GPU kernel's local memory (a stack).
  bool before = false, after = false;
  int64_t lo_b = 0, hi_b = 0, lo_a = 0, hi_a = 0;
  if (mode == PadMode::Reflect) {
    before = y >= 1 && y <= pad;  // mirrored before the start
    lo_b = hi_b = -y;
    after = y <= L - 2 && y >= L - 1 - pad;  // mirrored past the end
    lo_a = hi_a = 2 * (L - 1) - y;
  } else if (mode == PadMode::Replicate) {
    before = y == 0 && pad > 0;
    lo_b = -pad;
    hi_b = -1;
    after = y == L - 1 && pad > 0;
    lo_a = L;
    hi_a = L - 1 + pad;
  }
  Preimages p;
  p.n = 1 + int(before) + int(after);
  p.lo[0] = p.hi[0] = y;
  p.lo[1] = before ? lo_b : lo_a;
  p.hi[1] = before ? hi_b : hi_a;
  p.lo[2] = lo_a;
  p.hi[2] = hi_a;
  return p;
}

// True when y's only preimage is itself: the fast paths of the backward
// kernels need no enumeration there.
DEBLURFAST_HD bool pad_is_interior(int64_t y, int64_t L, int64_t pad, PadMode mode) {
  return mode == PadMode::Zeros || pad == 0 || (y > pad && y < L - 1 - pad);
}

}  // namespace deblurfast
