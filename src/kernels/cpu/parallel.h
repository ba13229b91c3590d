// How the CPU kernels split a matmul's output rows (or blocks of rows) over the OpenMP threads: the two
// patterns, written once.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace glmlab::par {

// One contiguous range of [0, n) per thread, near-equal (the first ones longer): f(begin, end) for each
// non-empty range. For kernels whose access pattern works over a thread's whole range (the 16-bit GEMVs
// read it as several long streams; the packed kernels' blocks).
template <class F>
void static_ranges(int64_t n, F&& f) {
#pragma omp parallel
  {
    const int64_t nth = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = (n + nth - 1) / nth, b = std::min(n, per * id), e = std::min(n, b + per);
    if (b < e) f(b, e);
  }
}

// Ranges of `block` rows of [0, n) taken by the threads as they come (dynamic): on a shared machine a
// thread that loses its core for a while does not hold the others up at the end.
template <class F>
void dynamic_blocks(int64_t n, int64_t block, F&& f) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < n; r += block) f(r, std::min(n, r + block));
}

}  // namespace glmlab::par
