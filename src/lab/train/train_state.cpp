// Saving and loading the resumable training state (see train_state.h).
#include "lab/train/train_state.h"

#include <fmt/ranges.h>

#include <charconv>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "model/safetensors.h"
#include "util/error.h"
#include "util/json.h"
#include "util/file.h"

namespace glmlab::lab {

namespace {
const char* kFile = "train_state.safetensors";
std::string path_of(const std::string& dir) { return (std::filesystem::path(dir) / kFile).string(); }
}  // namespace

bool has_train_state(const std::string& dir) { return path_exists(path_of(dir)); }

void save_train_state(const std::string& dir, const Adapter& adapter, const AdamW& opt_const, const TrainState& st,
                      const std::map<std::string, std::string>& extra_metadata) {
  std::filesystem::create_directories(dir);
  auto& opt = const_cast<AdamW&>(opt_const);  // m()/v() are the same storage; nothing is modified
  std::vector<TensorToWrite> t;
  size_t k = 0;
  for (auto& p : adapter.params()) {
    t.push_back({"param." + p.name, DType::F32, p.shape, p.value.data(), p.value.size() * 4});
    if (!p.trainable) continue;
    t.push_back({"adam_m." + p.name, DType::F32, p.shape, opt.m()[k].data(), opt.m()[k].size() * 4});
    t.push_back({"adam_v." + p.name, DType::F32, p.shape, opt.v()[k].data(), opt.v()[k].size() * 4});
    ++k;
  }
  nlohmann::json losses = st.losses;
  std::map<std::string, std::string> md = extra_metadata;
  md["step"] = std::to_string(st.step);
  md["optimizer_steps"] = std::to_string(opt.steps());
  md["losses"] = losses.dump();
  md["run"] = st.run;
  write_safetensors(path_of(dir), t, md);
}

TrainState load_train_state(const std::string& dir, Adapter& adapter, AdamW& opt, const std::string* expect_run) {
  const std::string file = path_of(dir);
  if (!path_exists(file)) fail("{}: no training state to resume from", file);
  SafetensorsFile f(file);
  if (expect_run) {  // the options first: a state of another run is refused before its tensors are read
    auto it = f.metadata().find("run");
    const std::string saved = it == f.metadata().end() ? std::string("<none>") : it->second;
    if (saved != *expect_run)
      fail("{}: --resume with other options than the saved run:\n  saved: {}\n  now:   {}", dir, saved.substr(0, 2000),
           *expect_run);
  }
  auto copy = [&](const std::string& name, std::vector<float>& dst, const std::vector<int64_t>& shape) {
    auto it = f.tensors().find(name);
    if (it == f.tensors().end()) fail("{}: tensor {} is missing (the run was saved with other adapter options)", file, name);
    if (it->second.dtype != DType::F32 || it->second.shape != shape)
      fail("{}: tensor {} has shape {} (dtype {}), expected fp32 [{}]", file, name, it->second.shape_str(),
           dtype_name(it->second.dtype), fmt::format("{}", fmt::join(shape, ", ")));
    std::memcpy(dst.data(), it->second.data, dst.size() * 4);
  };
  size_t k = 0;
  for (auto& p : adapter.params()) {
    copy("param." + p.name, p.value, p.shape);
    if (!p.trainable) continue;
    copy("adam_m." + p.name, opt.m()[k], p.shape);
    copy("adam_v." + p.name, opt.v()[k], p.shape);
    ++k;
  }
  TrainState st;
  const auto& md = f.metadata();
  // Whole-string, range-checked integers: "2abc", "-1" or "1e3" are errors, never 2.
  auto count = [&](const char* key) {
    auto it = md.find(key);
    if (it == md.end()) fail("{}: metadata \"{}\" is missing", file, key);
    const std::string& v = it->second;
    int64_t x = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec != std::errc() || end != v.data() + v.size() || x < 0)
      fail("{}: metadata \"{}\" is \"{}\", expected a whole number ≥ 0", file, key, v.substr(0, 40));
    return x;
  };
  st.step = count("step");
  opt.set_steps(count("optimizer_steps"));
  try {
    st.losses = parse_json(md.at("losses"), file + ": metadata \"losses\"").get<std::vector<double>>();
    st.run = md.at("run");
  } catch (const std::exception& e) {
    fail("{}: bad or missing metadata ({})", file, e.what());
  }
  return st;
}

}  // namespace glmlab::lab
