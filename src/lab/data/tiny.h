// tiny.json: n records at even intervals of the data sorted by length, for benchmarks.
//
// Rule: merge the files in the order given; stable-sort the records by total tokens (input + output),
// so ties keep file order and then line order; with N records sorted as s[0..N-1] take
//   index_k = floor((k * (N-1)) / (n-1) + 1/2)   for k = 0 .. n-1
// (k*(N-1)/(n-1) rounded half up, computed exactly in integers as (2k(N-1) + n-1) div (2(n-1))).
// index_0 = 0 is the shortest record, index_{n-1} = N-1 the longest; when N >= n the indices are
// distinct (consecutive exact values differ by at least 1). When N < n all N records are taken.
// n must be at least 2. The output lists the picks shortest first.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "lab/data/data_scan.h"

namespace glmlab::lab {

std::vector<size_t> even_indices(size_t count, size_t n);  // the rule above; throws when n < 2

struct TinySelection {
  std::vector<MeasuredRecord> picks;  // shortest first
  size_t total_records = 0;           // N
  int32_t min_total = 0, max_total = 0;  // total tokens of the shortest and longest record of all N
};
TinySelection select_tiny(const Scan& scan, size_t n);

// Re-reads the selected lines from scan.files and writes them as JSON lines in the input format
// ({"content": ..., "summary": ...}) to `out_path`, atomically. Memory: the n output lines only.
void write_tiny(const Scan& scan, const TinySelection& sel, const std::string& out_path, const ReadOptions& options);

}  // namespace glmlab::lab
