#include "cli/common.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include <fmt/format.h>

#include "dist/comm.h"
#include "kernels/cpu/runtime.h"
#include "kernels/cpu/simd.h"
#include "model/peft_io.h"
#include "model/quantize.h"
#include "cli/checks.h"
#include "util/error.h"
#include "util/parse.h"

namespace glmlab::cli {

void add_model_options(CLI::App* cmd, ModelArgs& a, bool with_weights) {
  cmd->add_option("--model,-m", a.model, "random:PRESET (chatglm3-6b, chatglm3-6b-32k, small, tiny) or a checkpoint folder")
      ->capture_default_str();
  cmd->add_option("--tokenizer", a.tokenizer, "tokenizer.model path, or 'bytes' for the byte-level fallback");
  if (!with_weights) return;
  cmd->add_option("--dtype", a.dtype,
                  "weight dtype: fp32, fp16, bf16, int8, int4 (default: as stored; bf16 for random)");
  cmd->add_option("--group-size", a.group_size, "int8/int4: inputs per scale when quantizing (0 = one per row)")
      ->check(IntAtLeast(0))
      ->capture_default_str();
  cmd->add_option("--device", a.device, "back end: cpu (fast), cpu-ref (reference) or cuda (the GPU, device engine)")
      ->capture_default_str();
  cmd->add_option("--engine", a.engine,
                  "auto, host (Model::forward) or device (the whole model in the back end's memory, decode steps "
                  "bucketed and replayed as graphs; auto = device for cuda)")
      ->check(CLI::IsMember({"auto", "host", "device"}))
      ->capture_default_str();
  cmd->add_option("--threads", a.threads, "threads (0 = all cores)")->check(IntIn(0, kMaxThreads))->capture_default_str();
  cmd->add_option("--seed", a.seed, "seed of random:PRESET weights")->check(UintIn())->capture_default_str();
  cmd->add_option("--adapter", a.adapter, "PEFT adapter folder (LoRA / VeRA) to apply, unmerged");
  cmd->add_flag("--fp32-activations", a.fp32_activations,
                "keep activations fp32 everywhere (bf16 weights otherwise use AMX tiles with bf16 activations)");
}

void apply_threads(int threads) {
  // Several ranks on one machine (mpirun -np N): by default each takes its share of the cores instead
  // of all of them (N × all cores would oversubscribe the machine N times).
  if (threads == 0 && dist::is_distributed() && dist::world().local_size() > 1)
    threads = std::max(1, omp_get_num_procs() / dist::world().local_size());
  if (threads > 0) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
}

bool wants_device_engine(const ModelArgs& a) {
  if (a.engine == "device") return true;
  if (a.engine == "host") {
    if (backend_from_name(a.device) == Backend::Cuda) fail("--engine host: the cuda back end runs only the device engine");
    return false;
  }
  return backend_from_name(a.device) == Backend::Cuda;
}

Loaded load(const ModelArgs& a, bool allow_device, bool inference) {
  apply_threads(a.threads);
  std::unique_ptr<Ops> ops;
  std::unique_ptr<Device> device;
  if (wants_device_engine(a)) {
    if (!allow_device)
      fail("--device {} / --engine device: this command runs on the host engine only (cpu or cpu-ref); the device "
           "engine serves generate, chat, bench infer and parity", a.device);
    device = make_device(backend_from_name(a.device), !a.fp32_activations);  // before a large model is loaded
  } else {
    ops = make_ops(backend_from_name(a.device), !a.fp32_activations);
  }
  auto t0 = std::chrono::steady_clock::now();
  Model m = load_model(a.model, a.dtype, a.seed, a.group_size);
  const int packed = inference && ops ? m.pack_weights(*ops) : 0;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "glmlab: loaded %s (%s, %.2f GB of weights) in %.2f s on %s (%s, OpenBLAS %s, %d threads)\n",
               a.model.c_str(), describe_weights(m.weights()).c_str(),
               double(m.weights().matrix_bytes()) / 1e9, secs,
               device ? fmt::format("{} (device engine)", device->name()).c_str() : std::string(ops->name()).c_str(),
               simd::target_name(), blas_core_name(), omp_get_max_threads());
  if (packed)
    std::fprintf(stderr, "glmlab: %d matrices repacked for the dot-product kernels (16 rows interleaved; int8/int4 "
                 "for VNNI, bf16 for AVX512-BF16, fp16 for AVX-512 FMA)\n", packed);
  std::shared_ptr<Adapter> adapter;
  if (!a.adapter.empty()) {
    adapter = std::make_shared<Adapter>(load_adapter(a.adapter, m.config()));
    m.set_adapter(adapter.get());
    std::fprintf(stderr, "glmlab: adapter %s (%s r %d, %lld parameters)\n", a.adapter.c_str(),
                 std::string(method_name(adapter->config().method)).c_str(), adapter->config().rank,
                 (long long)adapter->trainable_count());
  }
  return Loaded{std::move(m), std::move(ops), secs, std::move(adapter), std::move(device)};
}

std::unique_ptr<Engine> make_engine(const Model& model, Ops* ops, std::unique_ptr<Device> device,
                                    const EngineLimits& limits) {
  if (!device) return std::make_unique<HostEngine>(model, *ops);
  auto e = std::make_unique<DeviceEngine>(std::move(device), model, limits);
  std::fprintf(stderr, "glmlab: device engine on %s: %.2f GiB (weights %.2f, KV cache %.2f for %d × %d tokens, "
               "workspaces %.2f), graphs %s\n", e->device_name().c_str(), double(e->plan().total()) / (1ull << 30),
               double(e->plan().weights) / (1ull << 30), double(e->plan().kv_cache) / (1ull << 30), limits.batch,
               limits.capacity, double(e->plan().workspaces) / (1ull << 30), e->device().graphs() ? "on" : "off");
  return e;
}

std::vector<int32_t> parse_ids(const std::string& text, std::string_view option, int64_t vocab) {
  std::string s = text;
  for (char& c : s)
    if (c == ',') c = ' ';
  std::istringstream in(s);
  std::vector<int32_t> ids;
  std::string tok;
  while (in >> tok) {
    int64_t v = 0;
    try {
      v = parse_int64(tok, option);
    } catch (const Error&) {
      fail("{}: \"{}\" is not a token id (expected integers separated by spaces or commas)", option, tok);
    }
    if (v < 0 || v >= vocab) fail("{}: token id {} is outside the vocabulary [0, {})", option, tok, vocab);
    ids.push_back(int32_t(v));
  }
  return ids;
}

}  // namespace glmlab::cli
