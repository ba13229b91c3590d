// What machine a benchmark ran on, printed and stored with every result so numbers from different
// machines are never compared blindly: CPU model (/proc/cpuinfo), cores, threads used, the SIMD target
// chosen at run time, the OpenBLAS core, memory, and the load average (the machine may be shared).
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace glmlab::lab {

struct MachineInfo {
  std::string cpu_model;           // "model name" of /proc/cpuinfo ("unknown" when absent)
  int cores = 0;                   // logical CPUs this process may run on
  int threads = 0;                 // OpenMP threads the engine uses
  std::string simd;                // Highway target, e.g. "AVX3_SPR"
  std::string blas_core;           // OpenBLAS core, e.g. "Cooperlake"
  std::string device;              // back end: cpu, cpu-ref (later: cuda + GPU name)
  uint64_t mem_total_bytes = 0;
  std::array<double, 3> load_start{}, load_end{};  // /proc/loadavg 1/5/15 min at start and end
};

MachineInfo describe_machine(const std::string& device);
std::array<double, 3> load_average();  // zeros when /proc/loadavg is unreadable
nlohmann::json to_json(const MachineInfo& m);
std::string one_line(const MachineInfo& m);  // "Intel Xeon ..., 2 cores, 2 threads, AVX3_SPR, OpenBLAS ..."

}  // namespace glmlab::lab
