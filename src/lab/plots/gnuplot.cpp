// gnuplot runner (see gnuplot.h).
#include "lab/plots/gnuplot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "util/error.h"
#include "util/file.h"

namespace glmlab::lab {

namespace {
std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
}  // namespace

std::string gnuplot_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

void write_gnuplot_image(const std::string& path, const std::string& script, const std::string& gnuplot) {
  namespace fs = std::filesystem;
  std::string script_path = (fs::temp_directory_path() / "glmlab-gnuplot.XXXXXX").string();
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
  write_file_atomic(script_path, script);

  write_file_atomic(path, [&](std::FILE* out) {
    std::string cmd = fmt::format("{} {} 2>{}", gnuplot, shell_quoted(script_path), shell_quoted(err_path));
    std::FILE* pipe = ::popen(cmd.c_str(), "r");
    if (!pipe) fail("cannot run gnuplot to write {}", path);
    std::array<char, 1 << 16> buf;
    size_t n, total = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) {
      if (std::fwrite(buf.data(), 1, n, out) != n) {
        ::pclose(pipe);
        fail("cannot write {}", path);
      }
      total += n;
    }
    int st = ::pclose(pipe);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc == 127) fail("cannot write {}: {} not found (install gnuplot-nox)", path, gnuplot);
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
