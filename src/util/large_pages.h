// Storage for weights on transparent huge pages: a decode streams every weight once per token, and on
// 2 MiB pages it reads ~8% faster than on 4 KiB pages on the machines measured (fewer TLB misses, and the
// hardware prefetchers are not stopped at every 4 KiB boundary; docs/BENCHMARKS.md). Linux's default
// THP mode, "madvise", gives huge pages only to mappings that ask, so large buffers are their own
// anonymous mappings with MADV_HUGEPAGE, asked for before the first touch. Small ones use the heap.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

namespace glmlab {

template <class T>
struct LargePageAllocator {
  using value_type = T;
  static constexpr size_t kMinBytes = size_t(2) << 20;  // one huge page
  LargePageAllocator() = default;
  template <class U>
  LargePageAllocator(const LargePageAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kMinBytes) return std::allocator<T>().allocate(n);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    ::madvise(p, bytes, MADV_HUGEPAGE);  // a hint: without THP the pages stay 4 KiB
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes < kMinBytes)
      std::allocator<T>().deallocate(p, n);
    else
      ::munmap(p, bytes);
  }
  template <class U>
  bool operator==(const LargePageAllocator<U>&) const noexcept { return true; }
};

// Bytes of a weight matrix (or its scales) that the decode streams.
using WeightBytes = std::vector<uint8_t, LargePageAllocator<uint8_t>>;

}  // namespace glmlab
