// Histograms as a PNG image drawn by gnuplot (one panel per histogram), written atomically: gnuplot
// prints the PNG to a pipe that is copied into a temporary file renamed onto the target at the end.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "lab/data/data_stats.h"

namespace glmlab::lab {

// Throws Error when gnuplot is missing or fails (the target is then left untouched).
// `gnuplot` is the program to run (default: "gnuplot" from PATH).
void write_histograms_png(const std::string& path, const std::vector<std::pair<std::string, Histogram>>& histograms,
                          const std::string& title, const std::string& gnuplot = "gnuplot");

}  // namespace glmlab::lab
