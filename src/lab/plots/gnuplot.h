// Runs a gnuplot script whose terminal writes an image to standard output and stores that image
// atomically: the bytes go to PATH.tmp.XXXXXX (util/file.h) which is renamed onto PATH only when
// gnuplot succeeded, so a failed plot never leaves a half-written or empty file.
#pragma once
#include <string>

namespace glmlab::lab {

// Throws Error with gnuplot's message when it is missing or fails. `gnuplot` = the program to run.
void write_gnuplot_image(const std::string& path, const std::string& script, const std::string& gnuplot = "gnuplot");

// A gnuplot single-quoted string literal ('' stands for one quote).
std::string gnuplot_quoted(const std::string& s);

}  // namespace glmlab::lab
