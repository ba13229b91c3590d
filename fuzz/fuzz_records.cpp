// Fuzz target: an AdvertiseGen JSON-lines file -> read_records, strict (the first bad line is an
// Error), with skip_bad (bad lines are counted), and with a 16-byte line limit (long lines are bad).
#include "fuzz_util.h"
#include "lab/data/advertisegen.h"

using namespace glmlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_path("train.json");
  fuzz::write_bytes(path, data, size);
  size_t strict = 0, lenient = 0;
  const bool strict_refused = fuzz::refused([&] { strict = lab::read_records({path}, {}).size(); });
  lab::SkipLog log;
  const bool lenient_refused = fuzz::refused([&] {
    lenient = lab::read_records({path}, {.skip_bad = true}, &log).size();
  });
  // skip_bad only refuses a file without any non-blank line, which strict reading refuses too; and
  // when strict reading accepts the file, skip_bad reads the same records and skips nothing.
  if (lenient_refused && !strict_refused) __builtin_trap();
  if (!strict_refused && (lenient_refused || lenient != strict || log.count != 0)) __builtin_trap();
  if (log.first.size() > lab::SkipLog::kKeep || log.first.size() > log.count) __builtin_trap();
  fuzz::refused([&] {
    lab::SkipLog short_log;
    fuzz::consume(lab::read_records({path}, {.skip_bad = true, .max_line_bytes = 16}, &short_log).size());
  });
  return 0;
}
