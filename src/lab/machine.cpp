// Machine description for benchmark reports (see machine.h).
#include "lab/machine.h"

#include <omp.h>
#include <sched.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "kernels/cpu/runtime.h"
#include "kernels/cpu/simd.h"
#include "util/file.h"

namespace glmlab::lab {

namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.erase(v.begin());
    return v;
  }
  return "unknown";
}

int usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return int(std::thread::hardware_concurrency());
}

}  // namespace

std::array<double, 3> load_average() {
  std::array<double, 3> a{};
  std::ifstream in("/proc/loadavg");
  in >> a[0] >> a[1] >> a[2];
  if (!in) a = {};
  return a;
}

MachineInfo describe_machine(const std::string& device) {
  MachineInfo m;
  m.cpu_model = cpu_model_name();
  m.cores = usable_cores();
  m.threads = omp_get_max_threads();
  m.simd = simd::target_name();
  m.blas_core = blas_core_name();
  m.device = device;
  m.mem_total_bytes = total_memory_bytes();
  m.load_start = load_average();
  return m;
}

nlohmann::json to_json(const MachineInfo& m) {
  return {{"cpu", m.cpu_model},         {"cores", m.cores},         {"threads", m.threads},
          {"simd", m.simd},             {"blas_core", m.blas_core}, {"device", m.device},
          {"mem_total_bytes", m.mem_total_bytes}, {"load_start", m.load_start}, {"load_end", m.load_end}};
}

std::string one_line(const MachineInfo& m) {
  return fmt::format("{}, {} cores, {} threads, SIMD {}, OpenBLAS {}, {:.1f} GB RAM, device {}, load {:.2f} {:.2f} {:.2f}",
                     m.cpu_model, m.cores, m.threads, m.simd, m.blas_core, double(m.mem_total_bytes) / 1e9, m.device,
                     m.load_start[0], m.load_start[1], m.load_start[2]);
}

}  // namespace glmlab::lab
