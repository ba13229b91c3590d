// A self-contained interactive 3-D scatter page (no network, no library: one HTML file with its own
// canvas renderer in inline JavaScript): perspective projection, drag to rotate, wheel to zoom,
// double-click to reset, axes with ticks and titles, a legend that hides/shows series, and a tooltip
// with each record's numbers. When it has drawn, the page sets document.title to
// "rendered:N points;ink:K" (K = non-background pixels of the canvas); a script error sets it to
// "error: ..." and adds <pre id="error"> — so a headless browser can check it (tests/test_bench.cpp).
#pragma once
#include <string>
#include <vector>

#include "lab/bench/bench_plots.h"

namespace glmlab::lab {

// axis titles: x, y, z. subtitle: a line under the title (machine, model).
std::string scatter3d_html(const std::vector<ScatterPoint>& points, const std::string& title,
                           const std::string& subtitle,
                           const std::vector<std::string>& axis_titles = {"input + output tokens", "output tokens",
                                                                          "inference time (s)"});

}  // namespace glmlab::lab
