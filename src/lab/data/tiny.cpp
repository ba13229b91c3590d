// tiny.json selection and writing (see tiny.h).
#include "lab/data/tiny.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "lab/data/line_reader.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::lab {

std::vector<size_t> even_indices(size_t count, size_t n) {
  if (n < 2) fail("tiny needs n >= 2 (the shortest and the longest record), got {}", n);
  std::vector<size_t> idx;
  if (count < n) {
    idx.resize(count);
    std::iota(idx.begin(), idx.end(), size_t(0));
    return idx;
  }
  idx.reserve(n);
  const uint64_t span = count - 1, den = n - 1;
  for (uint64_t k = 0; k < n; ++k) idx.push_back(size_t((2 * k * span + den) / (2 * den)));
  return idx;
}

TinySelection select_tiny(const Scan& scan, size_t n) {
  if (scan.records.empty()) fail("no valid records to select from ({} bad record(s) skipped)", scan.skipped.count);
  std::vector<size_t> order(scan.records.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return scan.records[a].len.total_tokens() < scan.records[b].len.total_tokens();
  });
  TinySelection sel;
  sel.total_records = order.size();
  sel.min_total = scan.records[order.front()].len.total_tokens();
  sel.max_total = scan.records[order.back()].len.total_tokens();
  for (size_t i : even_indices(order.size(), n)) sel.picks.push_back(scan.records[order[i]]);
  return sel;
}

void write_tiny(const Scan& scan, const TinySelection& sel, const std::string& out_path, const ReadOptions& options) {
  std::vector<std::string> out(sel.picks.size());
  // For each file: line number -> output slots (one line can be picked once per file, but a file
  // given twice has two file indices, so slots are per (file index, line)).
  std::map<uint32_t, std::multimap<size_t, size_t>> wanted;
  for (size_t s = 0; s < sel.picks.size(); ++s) wanted[sel.picks[s].file].emplace(sel.picks[s].line, s);
  for (const auto& [fi, lines] : wanted) {
    const std::string& path = scan.files.at(fi);
    LineReader reader(path, options.max_line_bytes);
    Line line;
    auto it = lines.begin();
    while (it != lines.end() && reader.next(line)) {
      if (line.number != it->first) continue;
      ParsedLine p = parse_line(line, path, options.max_line_bytes);
      if (p.kind != LineKind::kRecord) fail("{}:{}: changed while tiny was reading it", path, line.number);
      std::string json_line = format_record_line(p.record.content, p.record.summary) + "\n";
      for (; it != lines.end() && it->first == line.number; ++it) out[it->second] = json_line;
    }
    if (it != lines.end()) fail("{}: ends before line {}: changed while tiny was reading it", path, it->first);
  }
  write_file_atomic(out_path, [&](std::FILE* f) {
    for (const auto& l : out)
      if (std::fwrite(l.data(), 1, l.size(), f) != l.size()) fail("cannot write {}", out_path);
  });
}

}  // namespace glmlab::lab
