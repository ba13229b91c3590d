#include "model/tokenizer.h"

#include <sentencepiece_processor.h>

#include <array>
#include <filesystem>

#include "util/error.h"

namespace glmlab {

namespace {
constexpr std::array<std::string_view, 9> kSpecialNames = {
    "[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"};
constexpr int32_t kFirstSpecial = tok::kMask;
constexpr int32_t kSpPieces = kFirstSpecial;  // 64789 SentencePiece pieces
}  // namespace

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  if (!std::filesystem::is_regular_file(path))
    fail("tokenizer file {} does not exist (expected ChatGLM3's tokenizer.model)", path);
  Tokenizer t;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto status = t.sp_->Load(path);
  if (!status.ok()) fail("cannot load tokenizer {}: {}", path, status.ToString());
  if (t.sp_->GetPieceSize() != kSpPieces)
    fail("tokenizer {} has {} pieces; ChatGLM3's tokenizer.model has {}", path, t.sp_->GetPieceSize(),
         kSpPieces);
  return t;
}

Tokenizer Tokenizer::byte_fallback() { return Tokenizer(); }

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  if (!sp_) {
    ids.reserve(text.size());
    for (unsigned char c : text) ids.push_back(int32_t(c) + 3);
    return ids;
  }
  std::vector<int> out;
  auto status = sp_->Encode(text, &out);
  if (!status.ok()) fail("tokenizer cannot encode text: {}", status.ToString());
  ids.assign(out.begin(), out.end());
  return ids;
}

std::vector<int32_t> Tokenizer::encode_with_prefix(std::string_view text) const {
  std::vector<int32_t> ids = {tok::kGMask, tok::kSop};
  auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

int32_t Tokenizer::role_id(std::string_view role) {
  if (role == "system") return tok::kSystem;
  if (role == "user") return tok::kUser;
  if (role == "assistant") return tok::kAssistant;
  if (role == "observation") return tok::kObservation;
  fail("unknown chat role \"{}\" (expected system, user, assistant or observation)", role);
}

std::optional<std::string_view> Tokenizer::special_name(int32_t id) {
  if (id >= kFirstSpecial && id < tok::kVocabSize) return kSpecialNames[size_t(id - kFirstSpecial)];
  return std::nullopt;
}

std::vector<int32_t> Tokenizer::build_single_message(std::string_view role, std::string_view metadata,
                                                     std::string_view content) const {
  std::vector<int32_t> ids = {role_id(role)};
  std::string header(metadata);
  header += '\n';
  auto h = encode(header);
  auto c = encode(content);
  ids.insert(ids.end(), h.begin(), h.end());
  ids.insert(ids.end(), c.begin(), c.end());
  return ids;
}

std::vector<int32_t> Tokenizer::build_chat_input(std::string_view query, const std::vector<ChatMessage>& history,
                                                 std::string_view role) const {
  std::vector<int32_t> ids = {tok::kGMask, tok::kSop};
  for (const auto& m : history) {
    auto part = build_single_message(m.role, m.metadata, m.content);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  auto part = build_single_message(role, "", query);
  ids.insert(ids.end(), part.begin(), part.end());
  ids.push_back(tok::kAssistant);
  return ids;
}

// TEMP (http branch): through build_chat_input, until the real build_chat lands on main.
std::vector<int32_t> Tokenizer::build_chat(const std::vector<ChatMessage>& messages) const {
  if (messages.empty()) fail("a chat needs at least one message");
  std::vector<ChatMessage> history(messages.begin(), messages.end() - 1);
  return build_chat_input(messages.back().content, history, messages.back().role);
}

namespace {
// Bytes at the end of `s` that may still change when more ids come: an unfinished UTF-8 character,
// or U+FFFD (SentencePiece's stand-in for byte pieces that do not form a character yet).
size_t unsettled_tail(const std::string& s) {
  size_t n = s.size(), i = n;
  while (i > 0 && n - i < 3 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) {
    unsigned char lead = static_cast<unsigned char>(s[i - 1]);
    size_t len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (len > 1 && n - (i - 1) < len) return n - (i - 1);        // unfinished character
    if (len == 3 && s.compare(i - 1, 3, "\xEF\xBF\xBD") == 0) return 3;  // U+FFFD
  }
  return 0;
}
}  // namespace

// TEMP (http branch): re-decodes every id; the real ReplyDecoder will come from main.
std::string ReplyDecoder::push(int32_t id) {
  ids_.push_back(id);
  std::string all = tok_.decode(ids_, /*lenient=*/true);
  size_t end = all.size() - unsettled_tail(all);
  if (end <= text_.size()) return {};
  std::string fresh = all.substr(text_.size(), end - text_.size());
  text_ += fresh;
  return fresh;
}

std::string ReplyDecoder::flush() {
  std::string all = tok_.decode(ids_, /*lenient=*/true);
  if (all.size() <= text_.size()) return {};
  std::string fresh = all.substr(text_.size());
  text_ += fresh;
  return fresh;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool lenient) const {
  std::string out;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    if (sp_) {
      std::string s;
      auto status = sp_->Decode(run, &s);
      if (!status.ok()) fail("tokenizer cannot decode: {}", status.ToString());
      out += s;
    } else {
      for (int id : run) out += char(id - 3);
    }
    run.clear();
  };
  for (int32_t id : ids) {
    if (auto name = special_name(id)) {
      flush();
      out += *name;
    } else if (id >= 0 && id < kSpPieces && (sp_ || (id >= 3 && id < 259))) {
      run.push_back(id);
    } else if (lenient) {
      flush();
      out += fmt::format("<id:{}>", id);
    } else {
      fail("token id {} is outside the tokenizer's vocabulary [0, {}){}", id, tok::kVocabSize,
           sp_ ? "" : " (the byte-level fallback decodes ids 3..258 and the special tokens only)");
    }
  }
  flush();
  return out;
}

}  // namespace glmlab
