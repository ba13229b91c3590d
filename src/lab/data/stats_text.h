// The terminal form of data statistics: a table of the metrics and text histograms.
#pragma once
#include <string>

#include "lab/data/data_stats.h"

namespace glmlab::lab {

// Bars are scaled so the fullest bin is `bar_width` characters of '#'.
std::string format_histogram(const std::string& title, const Histogram& h, int bar_width = 40);
std::string format_stats_text(const DataStats& stats);

}  // namespace glmlab::lab
