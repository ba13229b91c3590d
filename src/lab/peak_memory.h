// Peak resident memory of one phase of a run (e.g. one dtype of a benchmark): Linux keeps the
// process's high-water mark in VmHWM (/proc/self/status) and resets it to the current RSS when "5"
// is written to /proc/self/clear_refs. Where the reset is not allowed the peak is the process's
// peak so far (getrusage), and reset_peak_rss() says so by returning false.
#pragma once
#include <cstdint>

namespace glmlab::lab {

bool reset_peak_rss();
uint64_t phase_peak_rss_bytes();  // VmHWM; falls back to peak_rss_bytes() (util/file.h)

}  // namespace glmlab::lab
