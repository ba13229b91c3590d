// glmlab tokenize: text (or the chat layout with --chat) to ids, or ids back to text (--decode).
#include <cstdio>
#include <optional>

#include "cli/commands.h"
#include "cli/common.h"

namespace glmlab::cli {
namespace {

struct TokArgs {
  ModelArgs m;
  std::string text;
  bool chat = false, decode = false, prefix = false;
  std::optional<std::string> system;  // --system "" is an empty system turn; no --system, none
};

RegisterCommand register_tokenize([](CLI::App& app) {
  auto a = std::make_shared<TokArgs>();
  auto* cmd = app.add_subcommand("tokenize", "text to token ids (or --decode ids to text)");
  add_model_options(cmd, a->m, /*with_weights=*/false);
  cmd->add_option("text", a->text, "the text (or ids with --decode)")->required();
  cmd->add_flag("--chat", a->chat, "the chat layout of build_chat_input: [gMASK] sop <|user|> \\n TEXT <|assistant|>");
  cmd->add_option("--system", a->system, "with --chat: a system message first (\"\" is an empty system turn)");
  cmd->add_flag("--prefix", a->prefix, "prepend [gMASK] sop, as tokenizer.encode does");
  cmd->add_flag("--decode", a->decode, "decode ids to text");
  cmd->callback([a] {
    Tokenizer tok = load_tokenizer(a->m.tokenizer, a->m.model);
    if (a->decode) {
      std::printf("%s\n", tok.decode(parse_ids(a->text, "--decode")).c_str());
      return;
    }
    std::vector<ChatMessage> history;
    if (a->system) history.push_back({"system", *a->system, ""});
    auto ids = a->chat ? tok.build_chat_input(a->text, history) : a->prefix ? tok.encode_with_prefix(a->text) : tok.encode(a->text);
    std::string s;
    for (auto id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
    std::printf("%s\n", s.c_str());
  });
});

}  // namespace
}  // namespace glmlab::cli
