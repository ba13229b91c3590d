// glmlab generate / glmlab chat: streamed text, then prefill and decode speed.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "model/generate.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::cli {
namespace {

constexpr const char* kDefaultPrompt = "类型#裙*材质#针织*颜色#白色*风格#清新*图案#条纹*裙长#连衣裙";

struct GenArgs {
  ModelArgs m;
  std::string prompt = kDefaultPrompt;
  std::string ids;
  bool raw = false, sample = false;
  int batch = 1;
  std::optional<std::string> system;  // --system "" is an empty system turn; no --system, none
  GenerateOptions g;
};

void add_generation_options(CLI::App* cmd, GenArgs& a) {
  // Upper bounds that depend on the model (its seq_length) are checked once it is loaded (check_lengths).
  cmd->add_option("--max-new-tokens,-n", a.g.max_new_tokens, "most tokens to generate")
      ->check(IntAtLeast(0))
      ->capture_default_str();
  cmd->add_option("--min-new-tokens", a.g.min_new_tokens, "forced length: ignore stop ids before this many")
      ->check(IntAtLeast(0))
      ->capture_default_str();
  cmd->add_flag("--sample", a.sample, "sample instead of greedy decoding");
  cmd->add_option("--temperature", a.g.sampling.temperature, "0 = greedy")
      ->check(FiniteIn(0))  // above FLT_MAX it becomes inf: generate() refuses that
      ->capture_default_str();
  cmd->add_option("--top-p", a.g.sampling.top_p)->check(FiniteIn(0, 1))->capture_default_str();
  cmd->add_option("--top-k", a.g.sampling.top_k, "0 = off")->check(IntAtLeast(0))->capture_default_str();
  cmd->add_option("--sample-seed", a.g.sampling.seed)->check(UintIn())->capture_default_str();
  cmd->add_option("--system", a.system, "a system message before the prompt (\"\" is an empty system turn)");
}

// -n and --min-new-tokens against each other and against the model's context: prompt + new tokens
// must fit seq_length (counted in int64_t, so -n 2147483647 is an error, not a wrapped sum).
void check_lengths(const GenerateOptions& g, int64_t prompt_tokens, const ModelConfig& c) {
  if (g.min_new_tokens > g.max_new_tokens)
    fail("--min-new-tokens {} is more than --max-new-tokens {}", g.min_new_tokens, g.max_new_tokens);
  if (prompt_tokens + g.max_new_tokens > c.seq_length)
    fail("--max-new-tokens {}: the prompt's {} tokens plus {} new tokens exceed the model's seq_length {} (at most {} "
         "new tokens fit)", g.max_new_tokens, prompt_tokens, g.max_new_tokens, c.seq_length,
         std::max<int64_t>(0, c.seq_length - prompt_tokens));
}

// Prints a reply's text as it grows (ReplyDecoder holds back an unfinished UTF-8 character).
struct Streamer {
  ReplyDecoder dec;
  void print(const std::string& s) {
    if (s.empty()) return;
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }
  void push(int32_t id) { print(dec.push(id)); }
  void finish() { print(dec.flush()); }
};

void report(const GenerateResult& r) {
  std::fprintf(stderr, "\nprefill: %lld tokens in %.3f s = %.1f tokens/s | decode: %lld tokens in %.3f s = %.2f tokens/s\n",
               (long long)r.prefill_tokens, r.prefill_seconds, r.prefill_tokens / std::max(r.prefill_seconds, 1e-9),
               (long long)r.generated_tokens, r.decode_seconds,
               double(r.generated_tokens) / std::max(r.decode_seconds, 1e-9));
}

RegisterCommand register_generate([](CLI::App& app) {
  auto a = std::make_shared<GenArgs>();
  auto* cmd = app.add_subcommand("generate", "generate a reply to one prompt (streamed), then report speed");
  add_model_options(cmd, a->m);
  cmd->add_option("prompt", a->prompt, "user message (default: a built-in AdvertiseGen-style attribute list)");
  cmd->add_option("--ids", a->ids, "prompt as token ids instead of text (no chat layout)");
  cmd->add_flag("--raw", a->raw, "encode the prompt as plain text ([gMASK] sop TEXT), not the chat layout");
  cmd->add_option("--batch", a->batch, "run the prompt as a batch of this many sequences")
      ->check(IntAtLeast(1))
      ->capture_default_str();
  add_generation_options(cmd, *a);
  cmd->callback([a] {
    if (a->batch < 1) fail("--batch must be at least 1");
    Loaded L = load(a->m, /*allow_device=*/true, /*inference=*/true);
    Tokenizer tok = load_tokenizer(a->m.tokenizer, a->m.model);
    std::vector<ChatMessage> history;
    if (a->system) history.push_back({"system", *a->system, ""});
    const ModelConfig& c = L.model.config();
    std::vector<int32_t> prompt = !a->ids.empty() ? parse_ids(a->ids, "--ids", c.vocab_size)
                                  : a->raw        ? tok.encode_with_prefix(a->prompt)
                                                  : tok.build_chat_input(a->prompt, history);
    a->g.sampling.greedy = !a->sample;
    const int n = int(prompt.size());
    check_lengths(a->g, n, c);
    // The batch's memory before anything of that size is allocated: the prompt copies, and on the host
    // engine the KV cache plus the prefill's activations and last-position logits.
    const int64_t B = a->batch, capacity = int64_t(n) + a->g.max_new_tokens;
    uint64_t need = uint64_t(B) * uint64_t(n) * (sizeof(int32_t) * 4);
    if (!L.device)
      need += KVCache::bytes_needed(c, a->batch, int(capacity)) + Model::forward_bytes(c, a->batch, n, Logits::Last);
    check_memory(need, fmt::format("--batch {}: {} sequences of {} prompt + {} new tokens", B, B, n, a->g.max_new_tokens));
    if (B * n > std::numeric_limits<int32_t>::max())
      fail("--batch {}: {} × {} prompt tokens is more than {} tokens in one step", B, B, n,
           std::numeric_limits<int32_t>::max());
    auto engine = make_engine(L, EngineLimits{a->batch, int(capacity), a->batch * n, 0});
    Streamer st{ReplyDecoder(tok)};
    a->g.on_token = [&](int b, int32_t id) {
      if (b == 0) st.push(id);
    };
    auto res = generate(*engine, std::vector<std::vector<int32_t>>(size_t(a->batch), prompt), a->g);
    st.finish();
    report(res);
  });
});

RegisterCommand register_chat([](CLI::App& app) {
  auto a = std::make_shared<GenArgs>();
  auto* cmd = app.add_subcommand("chat", "interactive chat on stdin (one message per line; empty line or EOF ends)");
  add_model_options(cmd, a->m);
  add_generation_options(cmd, *a);
  cmd->callback([a] {
    Loaded L = load(a->m, /*allow_device=*/true, /*inference=*/true);
    Tokenizer tok = load_tokenizer(a->m.tokenizer, a->m.model);
    std::vector<ChatMessage> history;
    if (a->system) history.push_back({"system", *a->system, ""});
    a->g.sampling.greedy = !a->sample;
    // The whole conversation must fit one KV cache of the device engine (at most 8192 tokens).
    const int cap = std::min(L.model.config().seq_length, 8192);
    auto engine = make_engine(L, EngineLimits{1, cap, cap, 0});
    std::string line;
    while (std::fputs("user> ", stdout), std::fflush(stdout), std::getline(std::cin, line) && !line.empty()) {
      auto prompt = tok.build_chat_input(line, history);
      std::fputs("assistant> ", stdout);
      Streamer st{ReplyDecoder(tok)};
      a->g.on_token = [&](int, int32_t id) { st.push(id); };
      auto res = generate(*engine, {prompt}, a->g);
      st.finish();
      report(res);
      history.push_back({"user", line, ""});
      history.push_back({"assistant", tok.decode(res.tokens[0], true), ""});
    }
  });
});

}  // namespace
}  // namespace glmlab::cli
