// Merging adapters into checkpoints (see merge.h).
#include "model/merge.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string_view>

#include "model/config.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/json.h"
#include "util/file.h"

namespace glmlab {

namespace fs = std::filesystem;

namespace {

// model-<digits>-of-<digits>.safetensors: the name transformers gives a checkpoint's shards.
bool is_shard_name(std::string_view n) {
  auto digits = [&n] {
    size_t k = 0;
    while (k < n.size() && n[k] >= '0' && n[k] <= '9') ++k;
    n.remove_prefix(k);
    return k > 0;
  };
  auto take = [&n](std::string_view p) {
    if (!n.starts_with(p)) return false;
    n.remove_prefix(p.size());
    return true;
  };
  return take("model-") && digits() && take("-of-") && digits() && n == ".safetensors";
}

}  // namespace

std::vector<float> adapter_delta(const Adapter& a, int layer, Target t) {
  if (!a.adapts(layer, t)) return {};
  const AdapterConfig& c = a.config();
  const std::string base = "base_model.model." + target_path(layer, t);
  auto get = [&](const std::string& name) -> const AdapterParam& {
    for (auto& p : a.params())
      if (p.name == name) return p;
    fail("adapter tensor {} is missing", name);
  };
  const int64_t r = c.rank, in = a.dims(t).in, out = a.dims(t).out;
  std::vector<float> d(size_t(out * in), 0.0f);
  // ΔW[o, :] = Σ_k coef(o, k) · A[k, :]
  auto accumulate = [&](const std::vector<float>& A, int64_t a_stride, auto coef) {
    for (int64_t o = 0; o < out; ++o)
      for (int64_t k = 0; k < r; ++k) {
        const float cf = coef(o, k);
        if (cf == 0) continue;
        for (int64_t i = 0; i < in; ++i) d[size_t(o * in + i)] += cf * A[size_t(k * a_stride + i)];
      }
  };
  if (c.method == AdapterMethod::Lora) {
    const auto &A = get(base + ".lora_A.weight"), &B = get(base + ".lora_B.weight");
    const float s = c.scaling();
    accumulate(A.value, in, [&](int64_t o, int64_t k) { return s * B.value[size_t(o * r + k)]; });
  } else {
    const auto &lb = get(base + ".vera_lambda_b"), &ld = get(base + ".vera_lambda_d");
    const auto &A = get("base_model.vera_A"), &B = get("base_model.vera_B");
    accumulate(A.value, A.shape[1], [&](int64_t o, int64_t k) {
      return lb.value[size_t(o)] * B.value[size_t(o * r + k)] * ld.value[size_t(k)];
    });
  }
  return d;
}

MergeReport merge_checkpoint(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir) {
  if (path_exists(out_dir) && fs::equivalent(model_dir, out_dir))
    fail("merge: the output folder {} is the model folder; write the merged checkpoint elsewhere", out_dir);
  const ModelConfig cfg = ModelConfig::from_file((fs::path(model_dir) / "config.json").string());
  Adapter adapter = load_adapter(adapter_dir, cfg);
  SafetensorsSet set = SafetensorsSet::open(model_dir);
  MergeReport rep;
  std::vector<TensorToWrite> out;
  std::map<std::string, std::vector<uint8_t>> owned;  // merged tensors
  std::map<std::string, std::pair<int, Target>> adapted;
  for (int l = 0; l < cfg.num_layers; ++l)
    for (Target t : kTargets)
      if (adapter.adapts(l, t)) adapted[target_path(l, t) + ".weight"] = {l, t};
  for (const std::string& name : set.names()) {
    const TensorInfo& ti = set.get(name);
    auto it = adapted.find(name);
    if (it == adapted.end()) {
      out.push_back({name, ti.dtype, ti.shape, ti.data, ti.nbytes});
      continue;
    }
    if (ti.dtype != DType::F32 && ti.dtype != DType::F16 && ti.dtype != DType::BF16)
      fail("merge: {} is stored as {}; merge the adapter into the float checkpoint, then quantize", name,
           dtype_name(ti.dtype));
    const auto [l, t] = it->second;
    const LinearDims d = adapter.dims(t);
    if (ti.shape != std::vector<int64_t>{d.out, d.in})
      fail("merge: {} has shape {} but the adapter was made for [{}, {}]", name, ti.shape_str(), d.out, d.in);
    std::vector<float> w = adapter_delta(adapter, l, t);
    auto& bytes = owned[name];
    bytes.resize(ti.nbytes);
    auto non_finite = [&](size_t i, float base, float merged) {
      fail("merge: {}: the merged value at index {} is not finite ({} + {} = {} in {}); refusing to write {}", name, i,
           base, w[i], merged, dtype_name(ti.dtype), out_dir);
    };
    for (size_t i = 0; i < w.size(); ++i) {
      if (ti.dtype == DType::F32) {
        float b, v;
        std::memcpy(&b, ti.data + 4 * i, 4);
        v = b + w[i];
        if (!std::isfinite(v)) non_finite(i, b, v);
        std::memcpy(bytes.data() + 4 * i, &v, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, ti.data + 2 * i, 2);
        const float b = ti.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h), v = b + w[i];
        h = ti.dtype == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
        const float rounded = ti.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
        if (!std::isfinite(rounded)) non_finite(i, b, rounded);  // also a finite sum that overflows fp16
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    out.push_back({name, ti.dtype, ti.shape, bytes.data(), bytes.size()});
    rep.merged_matrices++;
    rep.dtype = std::string(dtype_name(ti.dtype));
  }
  if (rep.merged_matrices != int(adapted.size())) fail("merge: {} adapted linears not found in {}", adapted.size() - rep.merged_matrices, model_dir);
  fs::create_directories(out_dir);
  // A sharded checkpoint already in out_dir: its index would shadow the new model.safetensors (loaders
  // read the index first). The shards it lists, and any model-NNNNN-of-NNNNN.safetensors, go too; other
  // files are left alone. The new file is complete (written atomically) before anything is removed.
  const fs::path index = fs::path(out_dir) / "model.safetensors.index.json";
  std::vector<fs::path> stale;
  if (is_file(index)) {
    stale.push_back(index);
    try {
      const nlohmann::json j = read_json_file(index.string());
      if (j.is_object() && j.contains("weight_map") && j["weight_map"].is_object())
        for (const auto& [tensor, shard] : j["weight_map"].items())
          if (shard.is_string()) {
            const fs::path sp(shard.get<std::string>());
            if (sp.has_filename() && sp == sp.filename() && sp != "model.safetensors" && sp != "." && sp != "..")
              stale.push_back(fs::path(out_dir) / sp);
          }
    } catch (const Error&) {
      // an unreadable index is removed all the same
    }
  }
  for (const auto& e : fs::directory_iterator(out_dir))
    if (is_shard_name(e.path().filename().string())) stale.push_back(e.path());
  write_safetensors((fs::path(out_dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  for (const fs::path& p : stale) {
    std::error_code ec;
    if (fs::is_regular_file(fs::symlink_status(p)) || fs::is_symlink(fs::symlink_status(p))) fs::remove(p, ec);
    if (ec) fail("merge: wrote {} but cannot remove the stale {}: {}", (fs::path(out_dir) / "model.safetensors").string(),
                 p.string(), ec.message());
  }
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"}) {
    const fs::path src = fs::path(model_dir) / f;
    if (path_exists(src)) fs::copy_file(src, fs::path(out_dir) / f, fs::copy_options::overwrite_existing);
  }
  return rep;
}

}  // namespace glmlab
