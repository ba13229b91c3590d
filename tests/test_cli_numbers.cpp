// One rule for numbers (issue 14): util/parse.h's checked conversions, and the glmlab binary refusing
// (exit 1, a message naming the option) numbers that used to wrap, overflow, reach NaN into sampling
// or allocate without a memory check.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/safetensors.h"
#include "test_util.h"
#include "util/parse.h"

namespace glmlab {
namespace {

using test::error_of;
using test::run_cli;

// ---------------------------------------------------------------------------- util/parse.h

TEST(ParseNumbers, IntegersAreWholeDecimalAndInRange) {
  EXPECT_EQ(parse_int64("0", "x"), 0);
  EXPECT_EQ(parse_int64("-42", "x"), -42);
  EXPECT_EQ(parse_int64("+7", "x"), 7);
  EXPECT_EQ(parse_int64("9223372036854775807", "x"), INT64_MAX);
  EXPECT_EQ(parse_int64("-9223372036854775808", "x"), INT64_MIN);
  EXPECT_EQ(parse_int32("2147483647", "x"), INT32_MAX);
  for (const char* bad : {"", "-", "+", " 1", "1 ", "1.5", "1e3", "0x10", "010", "abc", "12abc", "+-1", "--1"})
    EXPECT_CONTAINS(error_of([&] { parse_int64(bad, "--opt"); }), "is not an integer");
  EXPECT_CONTAINS(error_of([&] { parse_int64("9223372036854775808", "--opt"); }), "out of range");
  EXPECT_CONTAINS(error_of([&] { parse_int32("4294967297", "--ids"); }), "--ids must be an integer in");
  EXPECT_CONTAINS(error_of([&] { parse_int32("4294967297", "--ids"); }), "4294967297");
  EXPECT_CONTAINS(error_of([&] { parse_int64("-1", "--threads", 0, 64); }), "--threads must be an integer in [0, 64], got -1");
  EXPECT_CONTAINS(error_of([&] { parse_int64("5", "--n", 10); }), "--n must be an integer >= 10, got 5");
}

TEST(ParseNumbers, UnsignedRefusesASignInsteadOfWrapping) {
  EXPECT_EQ(parse_uint64("18446744073709551615", "--seed"), UINT64_MAX);
  EXPECT_EQ(parse_uint64("+3", "--seed"), 3u);
  EXPECT_CONTAINS(error_of([&] { parse_uint64("-1", "--seed"); }), "--seed: \"-1\" is not an integer >= 0");
  EXPECT_CONTAINS(error_of([&] { parse_uint64("18446744073709551616", "--seed"); }), "out of range");
  EXPECT_CONTAINS(error_of([&] { parse_uint64("7", "--n", 1, 5); }), "--n must be an integer in [1, 5], got 7");
}

TEST(ParseNumbers, FloatsAreFiniteAndInRange) {
  EXPECT_DOUBLE_EQ(parse_double("0.5", "x"), 0.5);
  EXPECT_DOUBLE_EQ(parse_double("-1e-3", "x"), -1e-3);
  EXPECT_DOUBLE_EQ(parse_double("+2", "x"), 2.0);
  for (const char* bad : {"nan", "NaN", "-nan", "inf", "-inf", "infinity", "1e400"})
    EXPECT_CONTAINS(error_of([&] { parse_double(bad, "--lr"); }), "--lr must be a finite number");
  for (const char* bad : {"", "abc", "1.5x", " 1", "0x1p3", "+-1"})
    EXPECT_CONTAINS(error_of([&] { parse_double(bad, "--lr"); }), "is not a number");
  EXPECT_CONTAINS(error_of([&] { parse_double("-0.1", "--top-p", 0, 1); }),
                  "--top-p must be a finite number in [0, 1], got -0.1");
  EXPECT_CONTAINS(error_of([&] { check_finite_range(std::nan(""), "lr", 0, 1); }), "lr must be a finite number");
  EXPECT_CONTAINS(error_of([&] { check_int_range(-3, "max_input", 1, 100); }), "max_input must be an integer in [1, 100], got -3");
}

// ---------------------------------------------------------------------------- the binary

// Exit status 1 with "glmlab: error:" and every needle in the message.
void expect_refused(const std::string& args, const std::vector<std::string>& needles) {
  auto r = run_cli(args);
  EXPECT_EQ(r.rc, 1) << args << "\n" << r.out;
  EXPECT_CONTAINS(r.out, "glmlab: error:");
  for (const auto& n : needles) EXPECT_CONTAINS(r.out, n);
  EXPECT_EQ(r.out.find("internal error"), std::string::npos) << args << "\n" << r.out;
}

TEST(CliNumbers, ServingAndSchedulingOptionsAreChecked) {
  // The options of continuous batching and of the server: out of range, NaN, wrong words, a context
  // beyond the model's: exit 1 naming the option, before a port is opened or a run starts.
  const std::string serve = "serve --model random:tiny --threads 1 ";
  expect_refused(serve + "--max-batch 0", {"--max-batch"});
  expect_refused(serve + "--max-batch 4294967297", {"--max-batch"});
  expect_refused(serve + "--max-queue -1", {"--max-queue"});
  expect_refused(serve + "--port 65536", {"--port"});
  expect_refused(serve + "--port -1", {"--port"});
  expect_refused(serve + "--prefill-chunk 0", {"--prefill-chunk"});
  expect_refused(serve + "--context -5", {"--context"});
  expect_refused(serve + "--context 100000", {"context", "512"});  // random:tiny's seq_length
  expect_refused(serve + "--kv-dtype fp8", {"--kv-dtype"});
  expect_refused(serve + "--shutdown-timeout nan", {"--shutdown-timeout"});
  const std::string bench = "bench infer --model random:tiny --tokenizer bytes --records 2 --probe off --no-progress ";
  expect_refused(bench + "--schedule dynamic", {"--schedule"});
  expect_refused(bench + "--schedule continuous --prefill-chunk 0", {"--prefill-chunk"});
  expect_refused(bench + "--schedule continuous --prefill-chunk 99999999999", {"--prefill-chunk"});
  expect_refused(bench + "--schedule continuous --kv-dtype fp16", {"--kv-dtype"});
  expect_refused(bench + "--static-groups random", {"--static-groups"});
  expect_refused(bench + "--schedule continuous --batch 0", {"--batch"});
}

TEST(CliNumbers, TokenIdsAreNotWrappedToInt32) {
  // 4294967297 = 2^32 + 1 used to be read as id 1.
  expect_refused("generate --model random:tiny -n 2 --threads 1 --ids 4294967297", {"4294967297", "--ids"});
  expect_refused("generate --model random:tiny -n 2 --threads 1 --ids '1 2147483648'", {"2147483648", "65024"});
  expect_refused("tokenize --tokenizer bytes --decode 4294967309", {"4294967309"});
}

TEST(CliNumbers, MaxNewTokensIsBoundedByTheContext) {
  auto r = run_cli("generate --model random:tiny -n 2147483647 --threads 1 --ids '1 2 3'");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "--max-new-tokens");
  EXPECT_CONTAINS(r.out, "512");  // random:tiny's seq_length
  EXPECT_EQ(r.out.find("-21474836"), std::string::npos) << "a wrapped integer: " << r.out;
  expect_refused("generate --model random:tiny -n -1 --ids 1", {"--max-new-tokens"});
  expect_refused("generate --model random:tiny -n 4 --min-new-tokens -1 --ids 1", {"--min-new-tokens"});
  expect_refused("generate --model random:tiny -n 4 --min-new-tokens 5 --ids 1", {"--min-new-tokens"});
}

TEST(CliNumbers, SamplingParametersAreFiniteAndInRange) {
  const std::string gen = "generate --model random:tiny -n 2 --threads 1 --ids 1 --sample ";
  expect_refused(gen + "--temperature nan", {"--temperature"});
  expect_refused(gen + "--temperature -0.5", {"--temperature"});
  expect_refused(gen + "--temperature inf", {"--temperature"});
  expect_refused(gen + "--top-p nan", {"--top-p"});
  expect_refused(gen + "--top-p -0.1", {"--top-p"});
  expect_refused(gen + "--top-p 1.5", {"--top-p"});
  expect_refused(gen + "--top-k -1", {"--top-k"});
  expect_refused(gen + "--sample-seed -1", {"--sample-seed"});
  // In range they still run.
  auto r = run_cli(gen + "--temperature 0.7 --top-p 0.9 --top-k 40 --sample-seed 18446744073709551615");
  EXPECT_EQ(r.rc, 0) << r.out;
}

TEST(CliNumbers, ThreadsAndSeedsAreNotNegative) {
  expect_refused("generate --model random:tiny -n 2 --ids 1 --threads -1", {"--threads"});
  expect_refused("generate --model random:tiny -n 2 --ids 1 --seed -1", {"--seed"});
  expect_refused("data stats --tokenizer bytes --threads -2 /nonexistent.json", {"--threads"});
  expect_refused("data sample -n 2 --seed -1", {"--seed"});
  expect_refused("probe --threads -1", {"--threads"});
}

TEST(CliNumbers, InfoLoraAlphaIsFinite) {
  expect_refused("info --model random:tiny --lora-alpha nan", {"--lora-alpha"});
  expect_refused("info --model random:tiny --lora-alpha 1e39", {"--lora-alpha"});  // inf as a float
}

TEST(CliNumbers, DataSampleChecksMemoryBeforeAllocating) {
  expect_refused("data sample -n 1000000000000", {"memory", "1000000000000"});
  expect_refused("data sample -n -1", {"-n"});
  auto r = run_cli("data sample -n 3");
  EXPECT_EQ(r.rc, 0) << r.out;
}

TEST(CliNumbers, HugeBatchIsAMemoryErrorNotBadAlloc) {
  // A small KV cache (2 slots per sequence) but a million rows of 65024 logits (260 GB).
  expect_refused("generate --model random:tiny -n 1 --threads 1 --ids 1 --batch 1000000", {"memory", "--batch"});
  expect_refused("generate --model random:tiny -n 1 --threads 1 --ids 1 --batch 2147483647", {"memory", "--batch"});
  expect_refused("generate --model random:tiny -n 1 --ids 1 --batch 0", {"--batch"});
}

TEST(CliNumbers, ParityRefusesAnEmptyGolden) {
  auto dir = test::temp_dir("cli_parity_empty");
  for (auto shape : {std::vector<int64_t>{0, 4}, std::vector<int64_t>{2, 0}}) {
    const std::string path = (dir / "empty.safetensors").string();
    static const int64_t none[1] = {0};
    write_safetensors(path, {{"input_ids", DType::I64, shape, none, 0},
                             {"position_ids", DType::I64, shape, none, 0},
                             {"attention_mask", DType::I64, shape, none, 0},
                             {"prefill_logits", DType::F32, {shape[0], shape[1], 65024}, none, 0}});
    expect_refused("parity --model random:tiny --threads 1 --ref '" + path + "'", {path, "input_ids", "empty"});
  }
}

TEST(CliNumbers, ParityTolerancesAreFinite) {
  // The options are checked while parsing, before the golden file is opened.
  const std::string base = "parity --model random:tiny --ref /nonexistent/golden.safetensors ";
  expect_refused(base + "--atol nan", {"--atol"});
  expect_refused(base + "--rtol -1", {"--rtol"});
  expect_refused(base + "--min-top1 1.5", {"--min-top1"});
}

// The sample limits and adapter options train and bench train share (cli/train_setup.cpp).
TEST(CliNumbers, TrainSampleLimitsAndAdapterOptions) {
  const std::string data = (test::temp_dir("cli_numbers_train") / "data.json").string();
  auto r = run_cli("data sample -n 4 -o '" + data + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string train = "train --model random:tiny --tokenizer bytes --threads 1 --steps 1 --truncate --data '" + data + "' ";
  // max input + max output + 1 used to wrap to a negative limit.
  r = run_cli(train + "--max-input 2147483647");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "--max-input");
  EXPECT_EQ(r.out.find("-21474"), std::string::npos) << "a wrapped integer: " << r.out;
  expect_refused(train + "--max-input -1000", {"--max-input"});
  expect_refused(train + "--max-output 0", {"--max-output"});
  expect_refused(train + "--dropout nan", {"--dropout"});
  expect_refused(train + "--dropout 1", {"--dropout"});
  expect_refused(train + "--alpha inf", {"--alpha"});
  // A rank whose adapter cannot fit: a memory error before allocating (was std::bad_alloc).
  expect_refused(train + "--rank 2147483647", {"memory", "rank 2147483647"});
  const std::string bench = "bench train --model random:tiny --tokenizer bytes --threads 1 --probe off --no-progress "
                            "--method lora --qat none --dtype fp32 --steps 1 --warmup-steps 0 --records 2 --out '" +
                            test::temp_dir("cli_numbers_bench_train").string() + "' ";
  expect_refused(bench + "--lr nan", {"--lr"});
  expect_refused(bench + "--train-seed -1", {"--train-seed"});
  expect_refused(bench + "--records -1", {"--records"});
  expect_refused(bench + "--max-output 2147483647", {"--max-output"});
}

}  // namespace
}  // namespace glmlab
