// Parallel, bounded-memory measurement of AdvertiseGen files (see data_scan.h).
#include "lab/data/data_scan.h"

#include <omp.h>

#include <exception>

#include "lab/data/line_reader.h"
#include "util/error.h"

namespace glmlab::lab {

namespace {

struct LineResult {
  LineKind kind = LineKind::kBlank;
  RecordLengths len;
  std::string error;
};

}  // namespace

Scan scan_files(const std::vector<std::string>& paths, const Tokenizer& tok, const ScanOptions& options) {
  if (paths.empty()) fail("no input files given");
  // Unused where the OpenMP pragmas are off (the clang fuzz build on GCC's libgomp, fuzz/openmp.cmake).
  [[maybe_unused]] const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  const size_t max_line = options.read.max_line_bytes;
  const LengthMeter meter(tok);
  Scan scan;
  scan.files = paths;
  std::vector<Line> batch;
  std::vector<LineResult> results;
  for (uint32_t fi = 0; fi < paths.size(); ++fi) {
    const std::string& path = paths[fi];
    LineReader reader(path, max_line);
    size_t nonblank = 0;

    auto flush = [&] {
      const auto n = int64_t(batch.size());
      results.assign(batch.size(), LineResult{});
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
      for (int64_t i = 0; i < n; ++i) {
        LineResult& r = results[size_t(i)];
        try {
          ParsedLine p = parse_line(batch[size_t(i)], path, max_line);
          r.kind = p.kind;
          if (p.kind == LineKind::kRecord) r.len = meter(p.record.content, p.record.summary);
          if (p.kind == LineKind::kBad) r.error = std::move(p.error);
        } catch (const std::exception& e) {  // a record the tokenizer cannot encode is bad too
          r.kind = LineKind::kBad;
          r.error = fmt::format("{}:{}: {}", path, batch[size_t(i)].number, e.what());
        }
      }
      for (size_t i = 0; i < batch.size(); ++i) {
        LineResult& r = results[i];
        if (r.kind == LineKind::kBlank) continue;
        ++nonblank;
        if (r.kind == LineKind::kBad) {
          if (!options.read.skip_bad) throw Error(r.error);
          scan.skipped.add(std::move(r.error));
          continue;
        }
        scan.records.push_back(MeasuredRecord{fi, batch[i].number, r.len});
      }
      batch.clear();
    };

    size_t bytes = 0;
    Line line;
    while (reader.next(line)) {
      bytes += line.text.size();
      batch.push_back(std::move(line));
      if (batch.size() >= options.batch_lines || bytes >= options.batch_bytes) {
        flush();
        bytes = 0;
      }
    }
    flush();
    if (nonblank == 0) fail("{}: empty file (no JSON lines)", path);
  }
  return scan;
}

}  // namespace glmlab::lab
