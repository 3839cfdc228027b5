// Reductions of a contiguous run in 8 interleaved lanes, which the compiler vectorizes (a single
// running sum or max is a dependency chain it may not reorder without -ffast-math). The order is
// fixed, so the result does not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>

namespace deblurfast {

// sum(v[0:n])
template <typename T>
T lane_sum(const T* v, int64_t n) {
  T acc[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int j = 0; j < 8; ++j) acc[j] += v[q + j];
  for (; q < n; ++q) acc[q % 8] += v[q];
  T sum = 0;
  for (int j = 0; j < 8; ++j) sum += acc[j];
  return sum;
}

// max(init, v[0:n]) by std::max(acc, v): a NaN in v is passed over, as a running std::max does.
template <typename T>
T lane_max(const T* v, int64_t n, T init) {
  T acc[8];
  std::fill(acc, acc + 8, init);
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int j = 0; j < 8; ++j) acc[j] = std::max(acc[j], v[q + j]);
  for (; q < n; ++q) acc[q % 8] = std::max(acc[q % 8], v[q]);
  T m = init;
  for (int j = 0; j < 8; ++j) m = std::max(m, acc[j]);
  return m;
}

}  // namespace deblurfast
