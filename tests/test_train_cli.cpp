// `glmlab train` end to end on random:tiny (the real vocabulary) and a dozen AdvertiseGen records:
// PEFT files written, an interrupted + resumed run prints the same losses as an uninterrupted one,
// bad options are clear errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/generate.h"
#include "model/loader.h"
#include "model/peft_io.h"
#include "ops/ops.h"
#include "test_util.h"

namespace glmlab {
namespace {

using test::run_cli;

std::string cli_data() { return test::dev_json_head("train-cli-data", 8); }

std::string cli_args(const std::string& data) {
  return "train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " + data +
         " --steps 4 -b 2 --lr 1e-2 --truncate --warmup 1";
}

std::string losses_of(const std::string& out) {
  std::string r;
  size_t at = 0;
  while ((at = out.find("step ", at)) != std::string::npos) {
    size_t end = out.find('\n', at);
    std::string line = out.substr(at, end - at);
    if (line.find(" loss ") != std::string::npos && line.find('|') == std::string::npos) r += line + "\n";
    at = end;
  }
  return r;
}

TEST(FinetuneCli, TrainWritesPeftFilesAndResumesExactly) {
  const std::string data = cli_data();
  for (const char* method : {"lora", "vera --rank 32 --dropout 0.1"}) {
    auto a = test::temp_dir("train-cli-a"), b = test::temp_dir("train-cli-b");
    auto whole = run_cli(cli_args(data) + " --method " + method + " --out " + a.string());
    ASSERT_EQ(whole.rc, 0) << whole.out;
    EXPECT_TRUE(std::filesystem::exists(a / "adapter_config.json"));
    EXPECT_TRUE(std::filesystem::exists(a / "adapter_model.safetensors"));
    auto part = run_cli(cli_args(data) + " --method " + method + " --out " + b.string() + " --stop-after 2");
    ASSERT_EQ(part.rc, 0) << part.out;
    auto rest = run_cli(cli_args(data) + " --method " + method + " --out " + b.string() + " --resume");
    ASSERT_EQ(rest.rc, 0) << rest.out;
    EXPECT_EQ(losses_of(part.out) + losses_of(rest.out), losses_of(whole.out)) << whole.out;
    EXPECT_EQ(losses_of(whole.out).size() > 0, true);
    Adapter x = load_adapter(a.string(), ModelConfig::preset("tiny")), y = load_adapter(b.string(), ModelConfig::preset("tiny"));
    for (size_t i = 0; i < x.params().size(); ++i) EXPECT_EQ(x.params()[i].value, y.params()[i].value);
  }
}

// --engine device trains with the device-resident trainer (model/device_trainer.h) on the host device:
// the host trainer's losses on the same back end (LoRA, and VeRA with dropout; within 1e-5: the head
// takes its rows in other groups), and the adapter files written.
std::vector<double> loss_values(const std::string& out) {
  std::vector<double> v;
  std::istringstream in(losses_of(out));
  std::string step, loss;
  long n = 0;
  double x = 0;
  while (in >> step >> n >> loss >> x) v.push_back(x);
  return v;
}

TEST(FinetuneCli, TrainOnTheDeviceTrainerPrintsTheHostLosses) {
  const std::string data = cli_data();
  for (const char* method : {"lora", "vera --rank 32 --dropout 0.1"}) {
    SCOPED_TRACE(method);
    const std::string args = cli_args(data) + " --method " + method + " --fp32-activations --dtype fp32";
    auto host = run_cli(args + " --engine host");
    ASSERT_EQ(host.rc, 0) << host.out;
    auto dir = test::temp_dir("train-cli-device");
    auto dev = run_cli(args + " --engine device --out " + dir.string());
    ASSERT_EQ(dev.rc, 0) << dev.out;
    EXPECT_NE(dev.out.find("device trainer"), std::string::npos) << dev.out;
    const auto want = loss_values(host.out), got = loss_values(dev.out);
    ASSERT_EQ(want.size(), 4u) << host.out;
    ASSERT_EQ(got.size(), want.size()) << dev.out;
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * want[i]) << "step " << i + 1;
    EXPECT_TRUE(std::filesystem::exists(dir / "adapter_model.safetensors"));
  }
}

TEST(FinetuneCli, BadOptionsAreClearErrors) {
  const std::string data = cli_data();
  auto r = run_cli(cli_args(data) + " --method dora");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("unknown adapter method \"dora\""), std::string::npos) << r.out;
  r = run_cli(cli_args(data) + " --targets query_key_value,o_proj");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("unknown target module \"o_proj\""), std::string::npos) << r.out;
  r = run_cli(cli_args(data) + " --rank 0");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("rank must be positive"), std::string::npos) << r.out;
  r = run_cli("train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " + data +
              " --max-input 8 --max-output 8");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("more than the limit of 17"), std::string::npos) << r.out;
  r = run_cli(cli_args(data) + " --resume --out " + test::temp_dir("train-cli-empty").string());
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("no training state to resume from"), std::string::npos) << r.out;
}

TEST(FinetuneCli, ParityAndGenerateTakeAnAdapter) {
  // The oracle's PEFT model (prefill + cached greedy decode) against glmlab with --adapter.
  const std::string model = test::golden_path("train/tiny-f32");
  for (const char* m : {"lora", "vera"}) {
    const std::string ref = test::golden_path(std::string("train/") + m + "/parity.safetensors");
    auto r = run_cli("parity --tokenizer bytes --atol 5e-5 --rtol 0 --model " + model + " --ref " + ref +
                     " --adapter " + test::golden_path(std::string("train/") + m));
    EXPECT_EQ(r.rc, 0) << r.out;
    r = run_cli("parity --tokenizer bytes --atol 5e-5 --rtol 0 --model " + model + " --ref " + ref);
    EXPECT_NE(r.rc, 0) << "without the adapter the logits must differ\n" << r.out;
  }
  auto r = run_cli("generate --tokenizer bytes --ids '1 2 3' -n 3 --model " + model + " --adapter " +
                   test::golden_path("train/lora"));
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("adapter"), std::string::npos) << r.out;
  r = run_cli("generate --tokenizer bytes --ids '1 2 3' -n 3 --model random:small --adapter " +
              test::golden_path("train/lora"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("other shapes"), std::string::npos) << r.out;
}


// bench infer --adapter: the adapter is applied (other tokens than the base model), the tokens are those of
// generate() on the adapted model, summary.json names it; the device engine asks for a merge instead.
TEST(FinetuneCli, BenchInferTakesAnAdapter) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  AdapterConfig ac;
  ac.rank = 4;
  Adapter ad = Adapter::create(cfg, ac);
  int k = 0;
  for (auto& p : ad.params())
    if (p.name.find("lora_B") != std::string::npos)
      for (float& v : p.value) v = 0.5f * std::sin(0.37f * float(++k));  // PEFT starts B at 0: make it count
  const auto adir = test::temp_dir("bench-adapter-lora");
  save_adapter(adir.string(), ad);

  auto bench = [&](const std::string& extra, const std::string& name) {
    auto out = test::temp_dir(name);
    auto r = run_cli("bench infer --model random:tiny --tokenizer bytes --records 2 --dtype bf16 --max-new-tokens 6 "
                     "--probe off --no-progress --json -o " + out.string() + extra);
    EXPECT_EQ(r.rc, 0) << r.out;
    return out;
  };
  auto records = [](const std::filesystem::path& dir) {
    std::vector<nlohmann::json> v;
    std::ifstream in(dir / "records.jsonl");
    for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
    return v;
  };
  const auto base = bench("", "bench-adapter-base"), with = bench(" --adapter " + adir.string(), "bench-adapter-with");
  const auto rb = records(base), rw = records(with);
  ASSERT_EQ(rb.size(), 2u);
  ASSERT_EQ(rw.size(), 2u);
  EXPECT_NE(rb[0]["output_ids"], rw[0]["output_ids"]) << "the adapter changed nothing";
  EXPECT_EQ(rw[0]["output_ids"].size(), 6u);

  // The same tokens as generate() on the adapted model, from the prompt the bench wrote.
  std::ifstream pin(with / "prompts.jsonl");
  std::string first;
  std::getline(pin, first);
  const auto prompt = nlohmann::json::parse(first)["input_ids"].get<std::vector<int32_t>>();
  Model m = load_model("random:tiny");
  Adapter loaded = load_adapter(adir.string(), m.config());
  m.set_adapter(&loaded);
  auto ops = make_ops(Backend::Cpu);
  GenerateOptions opt;
  opt.max_new_tokens = opt.min_new_tokens = 6;
  GenerateResult g = generate(m, *ops, {prompt}, opt);
  EXPECT_EQ(rw[0]["output_ids"].get<std::vector<int32_t>>(), g.tokens[0]);

  const auto summary = nlohmann::json::parse(std::ifstream(with / "summary.json"));
  EXPECT_EQ(summary["model"]["adapter"], adir.string());
  EXPECT_TRUE(nlohmann::json::parse(std::ifstream(base / "summary.json"))["model"]["adapter"].is_null());

  auto r = run_cli("bench infer --model random:tiny --tokenizer bytes --records 1 --max-new-tokens 2 --probe off "
                   "--no-progress --engine device --adapter " + adir.string() + " -o " +
                   test::temp_dir("bench-adapter-dev").string());
  EXPECT_NE(r.rc, 0);
  EXPECT_CONTAINS(r.out, "merge the adapter first");
}

}  // namespace
}  // namespace glmlab
