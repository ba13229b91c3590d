// gnuplot PNG histograms (see histogram_png.h).
#include "lab/plots/histogram_png.h"

#include <algorithm>

#include <fmt/format.h>

#include "lab/plots/gnuplot.h"

namespace glmlab::lab {

namespace {

std::string make_script(const std::vector<std::pair<std::string, Histogram>>& hs, const std::string& title) {
  std::string s;
  s += fmt::format("set terminal pngcairo size 900,{} font 'sans,10'\n", 300 * std::max<size_t>(1, hs.size()));
  s += "set termoption noenhanced\nset style fill solid 0.6 border -1\nset grid ytics\nset ylabel 'records'\n";
  s += fmt::format("set multiplot layout {},1 title {}\n", hs.size(), gnuplot_quoted(title));
  for (size_t k = 0; k < hs.size(); ++k) {
    const auto& [name, h] = hs[k];
    s += fmt::format("$h{} << EOD\n", k);
    for (size_t i = 0; i < h.counts.size(); ++i)
      s += fmt::format("{} {}\n", double(h.lo) + double(h.width) * (double(i) + 0.5), h.counts[i]);
    s += "EOD\n";
    s += fmt::format("set boxwidth {}\nset xlabel {}\n", h.width, gnuplot_quoted(name + " (bin width " +
                                                                         std::to_string(h.width) + ")"));
    s += fmt::format("plot $h{} using 1:2 with boxes notitle\n", k);
  }
  s += "unset multiplot\n";
  return s;
}

}  // namespace

void write_histograms_png(const std::string& path, const std::vector<std::pair<std::string, Histogram>>& hs,
                          const std::string& title, const std::string& gnuplot) {
  write_gnuplot_image(path, make_script(hs, title), gnuplot);
}

}  // namespace glmlab::lab
