// Per-phase peak RSS (see peak_memory.h).
#include "lab/peak_memory.h"

#include <fstream>
#include <string>

#include "util/file.h"

namespace glmlab::lab {

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return bool(f);
}

uint64_t phase_peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      uint64_t kb = 0;
      if (in >> kb) return kb * 1024;
      break;
    }
    std::getline(in, key);
  }
  return peak_rss_bytes();
}

}  // namespace glmlab::lab
