// Progress bar with ETA (see progress.h).
#include "lab/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace glmlab::lab {

Progress::Progress(int64_t total, std::string unit, bool enabled)
    : total_(std::max<int64_t>(total, 1)), unit_(std::move(unit)), enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) == 1), start_(clock::now()), last_draw_(start_) {}

Progress::~Progress() { clear(); }

void Progress::set_label(std::string label) {
  label_ = std::move(label);
  draw(true);
}

void Progress::add(int64_t done) {
  done_ = std::min(total_, done_ + done);
  draw(false);
}

std::string Progress::format_seconds(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "--:--";
  long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

void Progress::draw(bool force) {
  if (!enabled_ || finished_) return;
  auto now = clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double frac = double(done_) / double(total_);
  double running = elapsed - paused_s_;
  double eta = done_ > 0 ? running * double(total_ - done_) / double(done_) : -1;
  if (tty_) {
    if (!force && now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
    constexpr int kWidth = 28;
    int fill = int(frac * kWidth);
    std::string bar(size_t(fill), '#');
    bar.append(size_t(kWidth - fill), '.');
    std::fprintf(stderr, "\r\033[K[%s] %3d%% %lld/%lld %s  %s  elapsed %s  ETA %s", bar.c_str(), int(frac * 100),
                 (long long)done_, (long long)total_, unit_.c_str(), label_.c_str(),
                 format_seconds(elapsed).c_str(), format_seconds(eta).c_str());
    std::fflush(stderr);
    shown_ = true;
  } else {
    int decile = int(frac * 10);
    if (decile == last_decile_ && !force) return;
    if (decile == last_decile_) return;  // a new label alone does not earn a line
    last_decile_ = decile;
    std::fprintf(stderr, "progress: %3d%% %lld/%lld %s  %s  elapsed %s  ETA %s\n", decile * 10, (long long)done_,
                 (long long)total_, unit_.c_str(), label_.c_str(), format_seconds(elapsed).c_str(),
                 format_seconds(eta).c_str());
  }
  last_draw_ = now;
}

void Progress::clear() {
  if (enabled_ && tty_ && shown_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    shown_ = false;
  }
}

void Progress::pause() {
  if (paused_) return;
  clear();
  paused_ = true;
  paused_at_ = clock::now();
}

void Progress::resume() {
  if (!paused_) return;
  paused_ = false;
  paused_s_ += std::chrono::duration<double>(clock::now() - paused_at_).count();
}

void Progress::finish() {
  if (finished_) return;
  done_ = total_;
  draw(true);
  if (enabled_ && tty_ && shown_) std::fputs("\n", stderr);
  shown_ = false;
  finished_ = true;
}

}  // namespace glmlab::lab
