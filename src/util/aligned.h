// Buffers aligned to a cache line. AMX tile loads (TILELOADD) whose rows straddle two 64-byte lines run
// ~5x slower (measured on an AMX Xeon: 17 ns against 3-4 ns a 1 KB tile from L1), and std::vector's
// memory is only 16-byte aligned, so every buffer that AMX or AVX-512 kernels read as tiles or whole
// 64-byte vectors lives in one of these.
#pragma once
#include <cstddef>
#include <new>
#include <utility>
#include <vector>

namespace glmlab {

template <class T, size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(Align))); }
  // vector(n) and resize(n) leave the elements default-initialized (not zeroed: the kernels' buffers are
  // written whole before they are read, and zeroing tens of MB a call showed in profiles); vector(n, v)
  // still fills with v.
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, std::align_val_t(Align)); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const noexcept { return true; }
};

// A std::vector whose data() is 64-byte aligned and whose new elements are not zeroed.
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace glmlab
