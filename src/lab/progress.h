// A progress bar with ETA on stderr for long lab runs (benchmarks, later training). On a terminal it
// redraws one line at most ~10 times a second; otherwise (a log file, CI) it prints a plain line at
// every 10% so logs stay short. The ETA is the remaining units at the average rate so far, counting
// only time while running (pause() / resume() leave out e.g. model loading).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace glmlab::lab {

class Progress {
 public:
  // total: units of work (e.g. tokens to generate); unit: their name ("tok").
  Progress(int64_t total, std::string unit, bool enabled = true);
  ~Progress();
  void set_label(std::string label);  // what runs now, e.g. "bf16 b1 rep 1/3"
  void add(int64_t done);             // `done` more units finished
  void finish();                      // final line (idempotent)
  void pause();                       // stop the rate clock (clears the bar)
  void resume();
  // Clears the bar so other output can be printed; it is redrawn on the next add().
  void clear();
  // "1:05", "12:03:07", "--:--" for a negative or unknown time.
  static std::string format_seconds(double s);

 private:
  void draw(bool force);
  using clock = std::chrono::steady_clock;
  int64_t total_, done_ = 0;
  std::string unit_, label_;
  bool enabled_, tty_, finished_ = false, shown_ = false;
  int last_decile_ = -1;
  clock::time_point start_, last_draw_, paused_at_;
  double paused_s_ = 0;  // time spent paused, left out of the rate
  bool paused_ = false;
};

}  // namespace glmlab::lab
