// Measuring AdvertiseGen files in parallel with bounded memory: lines are read in batches (at most
// batch_lines lines or batch_bytes bytes of text at once), each batch is parsed and tokenized by all
// threads, and only the lengths of each record are kept (about 40 bytes per record).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lab/data/advertisegen.h"
#include "model/tokenizer.h"

namespace glmlab::lab {

struct MeasuredRecord {
  uint32_t file = 0;  // index into Scan::files
  size_t line = 0;    // 1-based line number in that file
  RecordLengths len;
};

struct Scan {
  std::vector<std::string> files;
  std::vector<MeasuredRecord> records;  // file order, then line order
  SkipLog skipped;
};

struct ScanOptions {
  ReadOptions read;
  int threads = 0;  // 0: all the cores OpenMP sees
  size_t batch_lines = 4096;
  size_t batch_bytes = size_t(16) << 20;
};

// Errors as in RecordReader: the first bad record in file order throws unless read.skip_bad; missing
// and empty files always throw.
Scan scan_files(const std::vector<std::string>& paths, const Tokenizer& tok, const ScanOptions& options);

}  // namespace glmlab::lab
