// gnuplot PNG histograms (see histogram_png.h).
#include "lab/histogram_png.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "util/error.h"
#include "util/file.h"

namespace glmlab::lab {

namespace {

// A gnuplot single-quoted string: '' stands for one quote.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string make_script(const std::vector<std::pair<std::string, Histogram>>& hs, const std::string& title) {
  std::string s;
  s += fmt::format("set terminal pngcairo size 900,{} font 'sans,10'\n", 300 * std::max<size_t>(1, hs.size()));
  s += "set termoption noenhanced\nset style fill solid 0.6 border -1\nset grid ytics\nset ylabel 'records'\n";
  s += fmt::format("set multiplot layout {},1 title {}\n", hs.size(), quoted(title));
  for (size_t k = 0; k < hs.size(); ++k) {
    const auto& [name, h] = hs[k];
    s += fmt::format("$h{} << EOD\n", k);
    for (size_t i = 0; i < h.counts.size(); ++i)
      s += fmt::format("{} {}\n", double(h.lo) + double(h.width) * (double(i) + 0.5), h.counts[i]);
    s += "EOD\n";
    s += fmt::format("set boxwidth {}\nset xlabel {}\n", h.width, quoted(name + " (bin width " +
                                                                         std::to_string(h.width) + ")"));
    s += fmt::format("plot $h{} using 1:2 with boxes notitle\n", k);
  }
  s += "unset multiplot\n";
  return s;
}

// A POSIX shell single-quoted word.
std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

void write_histograms_png(const std::string& path, const std::vector<std::pair<std::string, Histogram>>& hs,
                          const std::string& title, const std::string& gnuplot) {
  namespace fs = std::filesystem;
  std::string script_path = (fs::temp_directory_path() / "glmlab-plot.XXXXXX").string();
  int fd = ::mkstemp(script_path.data());
  if (fd < 0) fail("cannot create a temporary gnuplot script");
  ::close(fd);
  std::string err_path = script_path + ".err";
  struct Cleanup {
    std::string a, b;
    ~Cleanup() {
      std::error_code ec;
      fs::remove(a, ec);
      fs::remove(b, ec);
    }
  } cleanup{script_path, err_path};
  write_file_atomic(script_path, make_script(hs, title));

  write_file_atomic(path, [&](std::FILE* out) {
    std::string cmd = fmt::format("{} {} 2>{}", gnuplot, shell_quoted(script_path), shell_quoted(err_path));
    std::FILE* pipe = ::popen(cmd.c_str(), "r");
    if (!pipe) fail("cannot run gnuplot to write {}", path);
    std::array<char, 1 << 16> buf;
    size_t n, total = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) {
      std::fwrite(buf.data(), 1, n, out);
      total += n;
    }
    int st = ::pclose(pipe);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc == 127) fail("cannot write {}: {} not found (install gnuplot-nox, or leave out --png)", path, gnuplot);
    if (rc != 0 || total < 8) {
      std::string msg;
      try {
        msg = read_file(err_path);
      } catch (const Error&) {
      }
      while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
      fail("cannot write {}: gnuplot failed (exit status {}): {}", path, rc, msg);
    }
  });
}

}  // namespace glmlab::lab
