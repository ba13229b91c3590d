// ChatGLM3's tokenizer: the real tokenizer.model through the SentencePiece C++ library, the nine
// special tokens appended after its vocabulary, the chat layout of build_chat_input, decoding as
// THUDM's ChatGLMTokenizer.decode, and ReplyDecoder, which decodes a growing reply for streaming.
// Without a tokenizer file: a byte-level fallback (byte b -> id b + 3, which are the real
// vocabulary's <0xNN> byte pieces) so that the embedded default needs no files.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece { class SentencePieceProcessor; }

namespace glmlab {

namespace tok {
constexpr int32_t kUnk = 0, kBos = 1, kEos = 2;
constexpr int32_t kMask = 64789, kGMask = 64790, kSMask = 64791, kSop = 64792, kEop = 64793;
constexpr int32_t kSystem = 64794, kUser = 64795, kAssistant = 64796, kObservation = 64797;
constexpr int32_t kVocabSize = 64798;  // n_words: SentencePiece pieces + 9 special tokens
}  // namespace tok

struct ChatMessage {
  std::string role;      // system | user | assistant | observation
  std::string content;
  std::string metadata;  // optional text after the role token (tool name, "interpreter")
};

class Tokenizer {
 public:
  // Loads tokenizer.model. Throws Error naming the path when missing or unreadable.
  static Tokenizer from_file(const std::string& path);
  // The byte-level fallback.
  static Tokenizer byte_fallback();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  bool is_byte_fallback() const { return !sp_; }
  int32_t vocab_size() const { return tok::kVocabSize; }

  // SentencePiece encoding of plain text (dummy prefix included, as sp.encode does).
  std::vector<int32_t> encode(std::string_view text) const;
  // tokenizer.encode(text): [gMASK, sop] + encode(text).
  std::vector<int32_t> encode_with_prefix(std::string_view text) const;
  // build_single_message: [<|role|>] + encode(metadata + "\n") + encode(content).
  std::vector<int32_t> build_single_message(std::string_view role, std::string_view metadata,
                                            std::string_view content) const;
  // build_chat_input: [gMASK, sop] + messages of history + message(role, query) + [<|assistant|>].
  std::vector<int32_t> build_chat_input(std::string_view query, const std::vector<ChatMessage>& history = {},
                                        std::string_view role = "user") const;
  // An OpenAI-style message list as THUDM lays it out: build_chat_input(query = messages.back().content,
  // history = all messages before it, role = messages.back().role), so the last message's metadata is not
  // used. Every message is a turn, an empty system message too. Throws Error for an empty list and for an
  // unknown role (naming it and the message's index).
  std::vector<int32_t> build_chat(const std::vector<ChatMessage>& messages) const;

  // ChatGLMTokenizer.decode: every id becomes its token (special ids their names, eos, bos and unk "") and
  // the whole list decodes at once, so only the text's first piece loses its leading "▁": after a special
  // id a "▁" is a space. Byte ids 3..258 that do not form UTF-8 decode as U+FFFD, one per byte.
  // Throws Error for ids outside [0, vocab_size) unless `lenient` (then they print as "<id:N>").
  std::string decode(const std::vector<int32_t>& ids, bool lenient = false) const;

  static int32_t role_id(std::string_view role);              // throws Error on unknown roles
  static std::optional<std::string_view> special_name(int32_t id);  // "[gMASK]", "<|user|>", ...

 private:
  friend class ReplyDecoder;
  Tokenizer() = default;
  // decode() of ids that follow others: `at_start` is whether every id before them is eos, bos or unk
  // (then their first piece still loses its leading "▁").
  std::string decode_span(std::span<const int32_t> ids, bool lenient, bool at_start) const;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

// Decodes a reply id by id for streaming. push() returns the text that is final once `id` is added;
// it holds back at most the last three byte ids, while they may still be the start of a UTF-8
// character. flush() returns what is held back (decoded as at the end of the reply). The pieces are
// whole UTF-8 characters, are never taken back, and concatenate to tok.decode(all ids, /*lenient=*/true).
// O(1) work per id. The tokenizer must outlive the decoder.
class ReplyDecoder {
 public:
  explicit ReplyDecoder(const Tokenizer& tok) : tok_(&tok) {}
  std::string push(int32_t id);
  std::string flush();
  const std::string& text() const { return text_; }  // everything push() and flush() returned

 private:
  std::string emit(size_t n);  // decodes the first n held ids, drops them, appends the text to text_
  const Tokenizer* tok_;
  std::vector<int32_t> held_;  // ids whose text may still change
  bool at_start_ = true;       // every id emitted so far was eos, bos or unk
  std::string text_;
};

}  // namespace glmlab
