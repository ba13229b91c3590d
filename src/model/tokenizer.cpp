#include "model/tokenizer.h"

#include <sentencepiece_processor.h>

#include <array>
#include <filesystem>

#include "util/error.h"
#include "util/file.h"

namespace glmlab {

namespace {
constexpr std::array<std::string_view, 9> kSpecialNames = {
    "[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"};
constexpr int32_t kFirstSpecial = tok::kMask;
constexpr int32_t kSpPieces = kFirstSpecial;  // 64789 SentencePiece pieces
constexpr int32_t kFirstByte = 3, kEndByte = 259;  // ids 3..258: the byte pieces <0x00>..<0xFF>
constexpr std::string_view kSpace = "\xE2\x96\x81";  // "▁", SentencePiece's space
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool is_byte_id(int32_t id) { return id >= kFirstByte && id < kEndByte; }
// eos, bos and unk (= pad): THUDM's convert_id_to_token gives them the token "".
bool is_empty_id(int32_t id) { return id == tok::kUnk || id == tok::kBos || id == tok::kEos; }

// Appends a run of bytes as SentencePiece decodes a run of byte pieces (string_util::DecodeUTF8): each
// well-formed UTF-8 character (no overlong forms, surrogates or code points above U+10FFFF) as itself,
// every other byte as U+FFFD.
void append_bytes(std::string& out, std::string_view b) {
  size_t i = 0;
  while (i < b.size()) {
    auto at = [&](size_t k) { return uint32_t(uint8_t(b[i + k])); };
    auto trail = [&](size_t k) { return i + k < b.size() && (at(k) & 0xC0) == 0x80; };
    const uint32_t c = at(0);
    size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if ((c & 0xE0) == 0xC0 && trail(1)) {
      uint32_t cp = ((c & 0x1F) << 6) | (at(1) & 0x3F);
      if (cp >= 0x80) len = 2;
    } else if ((c & 0xF0) == 0xE0 && trail(1) && trail(2)) {
      uint32_t cp = ((c & 0x0F) << 12) | ((at(1) & 0x3F) << 6) | (at(2) & 0x3F);
      if (cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000)) len = 3;
    } else if ((c & 0xF8) == 0xF0 && trail(1) && trail(2) && trail(3)) {
      uint32_t cp = ((c & 0x07) << 18) | ((at(1) & 0x3F) << 12) | ((at(2) & 0x3F) << 6) | (at(3) & 0x3F);
      if (cp >= 0x10000 && cp <= 0x10FFFF) len = 4;
    }
    if (len) {
      out.append(b.substr(i, len));
      i += len;
    } else {
      out.append(kReplacement);
      ++i;
    }
  }
}

// The surface of a normal piece at the start of the text: SentencePiece drops one leading "▁" there
// (the dummy prefix) and turns every other "▁" into a space.
std::string first_piece_text(std::string_view piece) {
  if (piece.starts_with(kSpace)) piece.remove_prefix(kSpace.size());
  std::string out;
  for (size_t p; (p = piece.find(kSpace)) != std::string_view::npos; piece.remove_prefix(p + kSpace.size()))
    out.append(piece.substr(0, p)) += ' ';
  out.append(piece);
  return out;
}
}  // namespace

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  if (!is_file(path))
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
  std::vector<ChatMessage> messages(history);
  messages.push_back({std::string(role), std::string(query), ""});
  return build_chat(messages);
}

std::vector<int32_t> Tokenizer::build_chat(const std::vector<ChatMessage>& messages) const {
  if (messages.empty()) fail("a chat needs at least one message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant" && r != "observation")
      fail("message {}: unknown chat role \"{}\" (expected system, user, assistant or observation)", i, r);
  }
  std::vector<int32_t> ids = {tok::kGMask, tok::kSop};
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool last = i + 1 == messages.size();  // the query: build_chat_input gives it no metadata
    auto part = build_single_message(m.role, last ? "" : m.metadata, m.content);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  ids.push_back(tok::kAssistant);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool lenient) const {
  return decode_span(ids, lenient, /*at_start=*/true);
}

std::string Tokenizer::decode_span(std::span<const int32_t> ids, bool lenient, bool at_start) const {
  auto bad_id = [&](int32_t id) {
    fail("token id {} is outside the tokenizer's vocabulary [0, {}){}", id, tok::kVocabSize,
         sp_ ? "" : " (the byte-level fallback decodes ids 0..258 and the special tokens only)");
  };
  auto is_piece = [&](int32_t id) { return id >= 0 && id < kSpPieces && (sp_ || id < kEndByte); };
  std::string out;
  if (!sp_) {
    std::string bytes;
    for (int32_t id : ids) {
      if (is_byte_id(id)) {
        bytes += char(id - kFirstByte);
        continue;
      }
      append_bytes(out, bytes);
      bytes.clear();
      if (auto name = special_name(id)) {
        out += *name;
      } else if (!is_piece(id)) {
        if (!lenient) bad_id(id);
        out += fmt::format("<id:{}>", id);
      }
    }
    append_bytes(out, bytes);
    return out;
  }
  // THUDM's ChatGLMTokenizer.decode is sp.decode_pieces over every id's token. At the start of the text
  // the first piece that is not "" (eos, bos, unk) loses its leading "▁"; that piece is decoded here,
  // the rest after a sentinel piece, so that SentencePiece strips no "▁" itself (its versions differ in
  // when they do: 0.1.97 while the text is empty, 0.2 only until one "▁" is dropped, as THUDM's).
  size_t i = 0;
  if (at_start) {
    while (i < ids.size() && is_empty_id(ids[i])) ++i;
    if (i < ids.size() && is_piece(ids[i]) && !is_byte_id(ids[i])) out = first_piece_text(sp_->IdToPiece(ids[i++]));
  }
  if (i == ids.size()) return out;
  constexpr std::string_view kSentinel = "<|user|>";  // not a piece: decodes as itself
  std::vector<std::string> pieces = {std::string(kSentinel)};
  pieces.reserve(ids.size() - i + 1);
  for (; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (auto name = special_name(id)) {
      pieces.emplace_back(*name);
    } else if (is_empty_id(id)) {
      pieces.emplace_back();  // "" still ends a run of byte pieces
    } else if (is_piece(id)) {
      pieces.push_back(sp_->IdToPiece(id));
    } else {
      if (!lenient) bad_id(id);
      pieces.push_back(fmt::format("<id:{}>", id));
    }
  }
  std::string s;
  auto status = sp_->Decode(pieces, &s);
  if (!status.ok()) fail("tokenizer cannot decode: {}", status.ToString());
  if (!std::string_view(s).starts_with(kSentinel)) fail("tokenizer decodes the piece {} as {}", kSentinel, s);
  out.append(s, kSentinel.size());
  return out;
}

std::string ReplyDecoder::push(int32_t id) {
  held_.push_back(id);
  // Everything is final except an unfinished UTF-8 character at the end of the trailing run of byte
  // ids: a lead byte followed only by continuation bytes, fewer than it needs. Any other byte decodes
  // the same whatever comes next (a whole character, or U+FFFD for each byte of a broken one).
  size_t o = held_.size();
  while (o > 0 && is_byte_id(held_[o - 1])) --o;
  while (o < held_.size()) {
    const uint32_t b = uint32_t(held_[o] - kFirstByte);
    const size_t len = b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF8 ? 4 : 1;
    size_t k = 1;
    while (k < len && o + k < held_.size() && ((held_[o + k] - kFirstByte) & 0xC0) == 0x80) ++k;
    if (k < len && o + k == held_.size()) break;  // may still become a character
    o += k;
  }
  return emit(o);
}

std::string ReplyDecoder::flush() { return emit(held_.size()); }

std::string ReplyDecoder::emit(size_t n) {
  if (n == 0) return {};
  std::string s = tok_->decode_span(std::span<const int32_t>(held_.data(), n), /*lenient=*/true, at_start_);
  for (size_t i = 0; i < n; ++i) at_start_ = at_start_ && is_empty_id(held_[i]);
  held_.erase(held_.begin(), held_.begin() + long(n));
  text_ += s;
  return s;
}

}  // namespace glmlab
