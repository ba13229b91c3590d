// ChatGLM3's tokenizer: the real tokenizer.model through the SentencePiece C++ library, the nine
// special tokens appended after its vocabulary, the chat layout of build_chat_input, and decoding.
// Without a tokenizer file: a byte-level fallback (byte b -> id b + 3, which are the real
// vocabulary's <0xNN> byte pieces) so that the embedded default needs no files.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
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
  // TEMP (http branch, until the real one lands on main): THUDM's chat layout of an OpenAI message
  // list: [gMASK, sop] + each message + [<|assistant|>]. Error on unknown roles.
  std::vector<int32_t> build_chat(const std::vector<ChatMessage>& messages) const;

  // Decodes ids: runs of normal ids through SentencePiece, special ids as their names.
  // Throws Error for ids outside [0, vocab_size) unless `lenient` (then they print as "<id:N>").
  std::string decode(const std::vector<int32_t>& ids, bool lenient = false) const;

  static int32_t role_id(std::string_view role);              // throws Error on unknown roles
  static std::optional<std::string_view> special_name(int32_t id);  // "[gMASK]", "<|user|>", ...

 private:
  Tokenizer() = default;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

// TEMP (http branch, until the real one lands on main): the text of a growing reply, id by id. push()
// returns the newly completed UTF-8 text (never retracted); flush() returns what is left at the end.
// This stand-in re-decodes all ids at each push and holds back an unfinished UTF-8 character.
class ReplyDecoder {
 public:
  explicit ReplyDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);
  std::string flush();
  const std::string& text() const { return text_; }

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  std::string text_;  // emitted so far
};

}  // namespace glmlab
