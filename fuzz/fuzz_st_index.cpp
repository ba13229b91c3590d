// Fuzz target: model.safetensors.index.json -> SafetensorsSet::open on a checkpoint folder that holds
// two small valid shards (model-00001-of-00002.safetensors: "a", "b"; model-00002-of-00002.safetensors:
// "c"), and a file "other.bin" that is not a shard.
#include <vector>

#include "fuzz_util.h"
#include "model/safetensors.h"

using namespace glmlab;

namespace {

const std::string& checkpoint_dir() {
  static const std::string dir = [] {
    const std::string d = fuzz::scratch_path("ckpt");
    std::filesystem::create_directories(d);
    const float a[4] = {1, 2, 3, 4}, c[2] = {5, 6};
    const int64_t b[3] = {7, 8, 9};
    write_safetensors(d + "/model-00001-of-00002.safetensors",
                      {{"a", DType::F32, {2, 2}, a, sizeof a}, {"b", DType::I64, {3}, b, sizeof b}});
    write_safetensors(d + "/model-00002-of-00002.safetensors", {{"c", DType::F32, {2}, c, sizeof c}});
    fuzz::write_bytes(d + "/other.bin", "not a safetensors file");
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = checkpoint_dir();
  fuzz::write_bytes(dir + "/model.safetensors.index.json", data, size);
  fuzz::refused([&] {
    SafetensorsSet s = SafetensorsSet::open(dir);
    uint64_t n = 0;
    for (const std::string& name : s.names()) n += s.get(name).nbytes;
    if (n != s.total_bytes()) __builtin_trap();
    fuzz::consume(n);
  });
  return 0;
}
