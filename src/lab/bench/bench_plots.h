// The inference benchmark's charts: the 3-D scatter of every record (x = input+output tokens,
// y = output tokens, z = inference time; one colour per dtype, one point shape per batch size) and the
// tokens/s bar chart per (dtype, batch), as PNG through gnuplot. The same points feed the interactive
// HTML page (scatter3d_html.h).
#pragma once
#include <string>
#include <vector>

#include "lab/bench/bench_infer.h"

namespace glmlab::lab {

struct ScatterPoint {
  std::string series;   // "bf16" or, with several batch sizes, "bf16 b8"
  std::string dtype;
  int batch = 1;
  size_t index = 0;     // record index
  int input_tokens = 0, output_tokens = 0;
  double time_s = 0;    // median over repetitions of the record's total time
};

// One point per (dtype, batch, record), in run order.
std::vector<ScatterPoint> scatter_points(const BenchReport& r);
// The colour of the k-th dtype ("#rrggbb"), shared by every chart.
std::string dtype_colour(size_t k);

void write_scatter3d_png(const std::string& path, const std::vector<ScatterPoint>& points, const std::string& title);
void write_tokens_per_s_png(const std::string& path, const BenchReport& r, const std::string& title);

}  // namespace glmlab::lab
