// gnuplot charts of the inference benchmark (see bench_plots.h).
#include "lab/bench/bench_plots.h"

#include <algorithm>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "lab/bench/bench_summary.h"
#include "lab/plots/gnuplot.h"

namespace glmlab::lab {

namespace {

std::vector<std::string> dtype_order(const BenchReport& r) {
  std::vector<std::string> order;
  for (const auto& s : r.runs)
    if (std::find(order.begin(), order.end(), s.dtype) == order.end()) order.push_back(s.dtype);
  return order;
}

std::vector<std::string> series_order(const std::vector<ScatterPoint>& pts) {
  std::vector<std::string> order;
  for (const auto& p : pts)
    if (std::find(order.begin(), order.end(), p.series) == order.end()) order.push_back(p.series);
  return order;
}

}  // namespace

std::string dtype_colour(size_t k) {
  static const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  return kPalette[k % (sizeof kPalette / sizeof kPalette[0])];
}

std::vector<ScatterPoint> scatter_points(const BenchReport& r) {
  bool several_batches = false;
  for (const auto& s : r.runs)
    several_batches |= s.batch != r.runs.front().batch || s.schedule != r.runs.front().schedule;
  // (dtype, schedule, batch, index) -> times over repetitions, keeping first-seen order.
  std::map<std::tuple<std::string, std::string, int, size_t>, size_t> slot;
  std::vector<ScatterPoint> pts;
  std::vector<std::vector<double>> times;
  for (const auto& x : r.records) {
    auto key = std::make_tuple(x.dtype, x.schedule, x.batch, x.index);
    auto it = slot.find(key);
    if (it == slot.end()) {
      ScatterPoint p;
      p.series = several_batches ? fmt::format("{} b{}{}", x.dtype, x.batch, x.schedule == "continuous" ? " cont." : "")
                                 : x.dtype;
      p.dtype = x.dtype;
      p.batch = x.batch;
      p.index = x.index;
      p.input_tokens = x.input_tokens;
      p.output_tokens = x.output_tokens;
      it = slot.emplace(key, pts.size()).first;
      pts.push_back(p);
      times.emplace_back();
    }
    times[it->second].push_back(x.total_s);
  }
  for (size_t i = 0; i < pts.size(); ++i) pts[i].time_s = spread_of(times[i]).median;
  return pts;
}

void write_scatter3d_png(const std::string& path, const std::vector<ScatterPoint>& pts, const std::string& title) {
  std::vector<std::string> dtypes;
  std::vector<int> batches;
  for (const auto& p : pts) {
    if (std::find(dtypes.begin(), dtypes.end(), p.dtype) == dtypes.end()) dtypes.push_back(p.dtype);
    if (std::find(batches.begin(), batches.end(), p.batch) == batches.end()) batches.push_back(p.batch);
  }
  static const int kPointTypes[] = {7, 5, 9, 13, 11, 15};
  std::string s = "set terminal pngcairo size 1000,760 font 'sans,10'\nset termoption noenhanced\n";
  s += fmt::format("set title {}\n", gnuplot_quoted(title));
  s += "set xlabel 'input + output tokens'\nset ylabel 'output tokens'\nset zlabel 'time (s)' rotate parallel\n";
  s += "set view 62, 32\nset ticslevel 0\nset grid x y z\nset border 4095 lw 0.5 lc rgb 'gray50'\n"
       "set key outside right top\nset xrange [0:*]\n"
       "set yrange [0:*]\nset zrange [0:*]\n";
  auto series = series_order(pts);
  std::string plot = "splot ";
  for (size_t k = 0; k < series.size(); ++k) {
    s += fmt::format("$s{} << EOD\n", k);
    const ScatterPoint* first = nullptr;
    for (const auto& p : pts)
      if (p.series == series[k]) {
        if (!first) first = &p;
        s += fmt::format("{} {} {:.6g}\n", p.input_tokens + p.output_tokens, p.output_tokens, p.time_s);
      }
    s += "EOD\n";
    size_t di = size_t(std::find(dtypes.begin(), dtypes.end(), first->dtype) - dtypes.begin());
    size_t bi = size_t(std::find(batches.begin(), batches.end(), first->batch) - batches.begin());
    plot += fmt::format("{}$s{} using 1:2:3 with impulses dt 3 lc rgb '{}' notitle, ", k ? ", " : "", k,
                        dtype_colour(di));
    plot += fmt::format("$s{} using 1:2:3 with points pt {} ps 1.2 lc rgb '{}' title {}", k, kPointTypes[bi % 6],
                        dtype_colour(di), gnuplot_quoted(series[k]));
  }
  s += plot + "\n";
  write_gnuplot_image(path, s);
}

void write_tokens_per_s_png(const std::string& path, const BenchReport& r, const std::string& title) {
  auto dtypes = dtype_order(r);
  std::string s = fmt::format("set terminal pngcairo size {},520 font 'sans,10'\nset termoption noenhanced\n",
                              std::max<size_t>(640, 120 * r.runs.size() + 200));
  s += fmt::format("set title {}\n", gnuplot_quoted(title));
  s += "set ylabel 'generated tokens / s (median; bars: min-max over reps)'\nset yrange [0:*]\nset grid ytics\n"
       "set style fill solid 0.75 border -1\nset boxwidth 0.6\nset xtics nomirror\nset key off\n"
       "set offsets 0.5, 0.5, 0, 0\n";
  s += "$d << EOD\n";
  for (size_t i = 0; i < r.runs.size(); ++i) {
    const auto& run = r.runs[i];
    size_t di = size_t(std::find(dtypes.begin(), dtypes.end(), run.dtype) - dtypes.begin());
    unsigned colour = unsigned(std::stoul(dtype_colour(di).substr(1), nullptr, 16));
    s += fmt::format("{} \"{} b{}{}\" {:.6g} {:.6g} {:.6g} {}\n", i, run.dtype, run.batch,
                     run.schedule == "continuous" ? " cont." : "", run.throughput_tps.median,
                     run.throughput_tps.min, run.throughput_tps.max, colour);
  }
  s += "EOD\n";
  bool spread = false;
  for (const auto& run : r.runs) spread |= run.throughput_tps.max > run.throughput_tps.min;
  s += "plot $d using 1:3:6:xtic(2) with boxes lc rgb variable";
  if (spread) s += ", '' using 1:3:4:5 with yerrorbars lc rgb 'black' lw 1.5 pt 7 ps 0.3";
  s += ", '' using 1:5:(sprintf('%.1f', $3)) with labels offset 0,1\n";
  write_gnuplot_image(path, s);
}

}  // namespace glmlab::lab
