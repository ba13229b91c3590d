// Byte counts in the units the messages print.
#pragma once
#include <cstdint>

namespace glmlab {

constexpr double mib(uint64_t bytes) { return double(bytes) / double(1ull << 20); }
constexpr double gib(uint64_t bytes) { return double(bytes) / double(1ull << 30); }

}  // namespace glmlab
