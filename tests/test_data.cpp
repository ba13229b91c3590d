// AdvertiseGen reading (lab/advertisegen.h, lab/line_reader.h): the input/output definition and
// every kind of bad input, through the library and the CLI.
#include <gtest/gtest.h>

#include <cstdlib>

#include "lab/data/advertisegen.h"
#include "lab/data/data_scan.h"
#include "test_data_util.h"
#include "util/utf8.h"

using namespace glmlab;
using namespace glmlab::lab;
using namespace glmlab::test;

namespace {

std::vector<Record> read_one(const std::string& path, ReadOptions o = {}, SkipLog* log = nullptr) {
  return read_records({path}, o, log);
}

}  // namespace

TEST(DataDefinition, ChatIdsMatchTheRecipe) {
  auto tok = Tokenizer::from_file(tokenizer_path());
  // ids from the facts page: user "你好" and SentencePiece "Hello world" -> [13755, 993].
  auto ids = sample_ids(tok, "你好", "Hello world");
  EXPECT_EQ(ids.input, (std::vector<int32_t>{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796}));
  EXPECT_EQ(ids.output, (std::vector<int32_t>{30910, 13, 13755, 993, 2}));
  auto len = measure(tok, "你好", "Hello world");
  EXPECT_EQ(len.input_tokens, 8);
  EXPECT_EQ(len.output_tokens, 5);
  EXPECT_EQ(len.total_tokens(), 13);
  EXPECT_EQ(len.content_tokens, 2);
  EXPECT_EQ(len.summary_tokens, 2);
  EXPECT_EQ(len.content_chars, 2);
  EXPECT_EQ(len.summary_chars, 11);
}

TEST(DataDefinition, LengthMeterEqualsSampleIdsSizes) {
  auto tok = Tokenizer::from_file(tokenizer_path());
  LengthMeter meter(tok);
  auto recs = read_records({dev_json_path()}, {});
  for (size_t i = 0; i < recs.size(); i += 7) {
    auto ids = sample_ids(tok, recs[i].content, recs[i].summary);
    auto len = meter(recs[i].content, recs[i].summary);
    ASSERT_EQ(size_t(len.input_tokens), ids.input.size()) << "line " << recs[i].line;
    ASSERT_EQ(size_t(len.output_tokens), ids.output.size()) << "line " << recs[i].line;
    ASSERT_EQ(size_t(len.content_tokens), tok.encode(recs[i].content).size());
    ASSERT_EQ(size_t(len.summary_tokens), tok.encode(recs[i].summary).size());
  }
}

TEST(DataDefinition, ByteFallbackCounts) {
  auto tok = Tokenizer::byte_fallback();
  // byte tokenizer: encode(text) = one id per byte, no dummy prefix; "\n" -> [13].
  auto len = measure(tok, "abc", "de");
  EXPECT_EQ(len.input_tokens, 3 + 1 + 3 + 1);
  EXPECT_EQ(len.output_tokens, 1 + 2 + 1);
  EXPECT_EQ(len.content_tokens, 3);
  EXPECT_EQ(len.summary_tokens, 2);
  auto zh = measure(tok, "裙", "");  // 3 UTF-8 bytes, 1 code point
  EXPECT_EQ(zh.content_tokens, 3);
  EXPECT_EQ(zh.content_chars, 1);
  EXPECT_EQ(zh.summary_tokens, 0);
}

TEST(DataUtf8, ValidatesAndCounts) {
  EXPECT_FALSE(utf8::first_invalid("类型#裙*abc").has_value());
  EXPECT_EQ(utf8::first_invalid("ab\xff"), 2u);
  EXPECT_EQ(utf8::first_invalid("a\xe7\xb1"), 1u);           // truncated
  EXPECT_EQ(utf8::first_invalid("\xc0\xaf"), 0u);            // overlong
  EXPECT_EQ(utf8::first_invalid("x\xed\xa0\x80"), 1u);       // surrogate
  EXPECT_EQ(utf8::first_invalid("\xf4\x90\x80\x80"), 0u);    // above U+10FFFF
  EXPECT_FALSE(utf8::first_invalid("\xf0\x9f\x91\x8b").has_value());  // 👋
  EXPECT_EQ(utf8::count_code_points("类型#裙👋"), 5u);
}

TEST(DataRead, RecordsLinesAndFormats) {
  auto dir = temp_dir("data_read_ok");
  // BOM, CRLF, a blank line, escapes, extra fields, last line without "\n".
  std::string text = "\xEF\xBB\xBF" + jline("a", "b");
  text.back() = '\r';
  text += "\n\n   \n{\"summary\": \"s \\\"q\\\" \\u4f60\", \"extra\": 1, \"content\": \"\xE7\xB1\xBB\"}\n";
  text += "{\"content\": \"x\", \"summary\": \"y\"}";
  auto path = write_text(dir / "ok.json", text);
  auto recs = read_one(path);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].content, "a");
  EXPECT_EQ(recs[0].summary, "b");
  EXPECT_EQ(recs[0].line, 1u);
  EXPECT_EQ(recs[1].line, 4u);
  EXPECT_EQ(recs[1].content, "类");
  EXPECT_EQ(recs[1].summary, "s \"q\" 你");
  EXPECT_EQ(recs[2].line, 5u);
  EXPECT_EQ(recs[2].file, path);
  EXPECT_EQ(format_record_line("类型#裙", "a\"b\\c\nd"),
            "{\"content\": \"类型#裙\", \"summary\": \"a\\\"b\\\\c\\nd\"}");
}

TEST(DataBadInput, InvalidJson) {
  auto dir = temp_dir("data_bad_json");
  auto path = write_text(dir / "bad.json", jline("a", "b") + "{\"content\": \"a\", \"summary\": }\n");
  expect_error([&] { read_one(path); }, {path + ":2:", "invalid JSON"});
}

TEST(DataBadInput, NotAnObject) {
  auto dir = temp_dir("data_bad_array");
  auto path = write_text(dir / "bad.json", "[1, 2]\n");
  expect_error([&] { read_one(path); }, {path + ":1:", "expected a JSON object, found array"});
}

TEST(DataBadInput, MissingField) {
  auto dir = temp_dir("data_bad_missing");
  auto path = write_text(dir / "bad.json", jline("a", "b") + jline("c", "d") + "{\"content\": \"e\"}\n");
  expect_error([&] { read_one(path); }, {path + ":3:", "field \"summary\" is missing"});
}

TEST(DataBadInput, NonStringField) {
  auto dir = temp_dir("data_bad_type");
  auto path = write_text(dir / "bad.json", "{\"content\": 5, \"summary\": \"x\"}\n");
  expect_error([&] { read_one(path); }, {path + ":1:", "field \"content\" must be a string, found number"});
  auto path2 = write_text(dir / "bad2.json", "{\"content\": \"a\", \"summary\": null}\n");
  expect_error([&] { read_one(path2); }, {path2 + ":1:", "field \"summary\" must be a string, found null"});
}

TEST(DataBadInput, InvalidUtf8) {
  auto dir = temp_dir("data_bad_utf8");
  auto path = write_text(dir / "bad.json", jline("a", "b") + jline("c\xff", "d"));
  expect_error([&] { read_one(path); }, {path + ":2:", "invalid UTF-8 at byte 15"});
}

TEST(DataBadInput, EmptyFile) {
  auto dir = temp_dir("data_bad_empty");
  auto path = write_text(dir / "empty.json", "");
  expect_error([&] { read_one(path); }, {path, "empty file"});
  auto blank = write_text(dir / "blank.json", "\n  \n\n");
  ReadOptions skip;
  skip.skip_bad = true;  // an empty file is not a bad record: still an error
  expect_error([&] { read_one(blank, skip); }, {blank, "empty file"});
  auto tok = Tokenizer::byte_fallback();
  expect_error([&] { scan_files({path}, tok, {}); }, {path, "empty file"});
}

TEST(DataBadInput, LineOverTheLimit) {
  auto dir = temp_dir("data_bad_long");
  // A 3 MiB line against the default 1 MiB limit: reported with its length, never stored whole.
  std::string big(size_t(3) << 20, 'x');
  auto path = write_text(dir / "long.json", jline("a", "b") + jline("c", big) + jline("d", "e"));
  expect_error([&] { read_one(path); }, {path + ":2:", "3145759 bytes long", "limit of 1048576 bytes"});
  ReadOptions o;
  o.max_line_bytes = 40;  // configurable; line 1 is 32 bytes
  expect_error([&] { read_one(path, o); }, {path + ":2:", "limit of 40 bytes"});
  o.skip_bad = true;
  o.max_line_bytes = 100;
  SkipLog log;
  auto recs = read_one(path, o, &log);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1].content, "d");
  EXPECT_EQ(recs[1].line, 3u);
  EXPECT_EQ(log.count, 1u);
}

TEST(DataBadInput, MissingFile) {
  auto dir = temp_dir("data_bad_missing_file");
  auto path = (dir / "nope.json").string();
  expect_error([&] { read_one(path); }, {path, "cannot open", "No such file"});
  expect_error([&] { read_one(dir.string()); }, {dir.string(), "is a directory"});
}

TEST(DataBadInput, SkipBadCountsEveryKind) {
  auto dir = temp_dir("data_skip_bad");
  std::string text = jline("a", "b") + "{oops\n" + "{\"content\": \"c\"}\n" + "{\"content\": 1, \"summary\": \"x\"}\n" +
                     jline("\xfe", "d") + "7\n" + jline("e", "f");
  auto path = write_text(dir / "mixed.json", text);
  ReadOptions o;
  o.skip_bad = true;
  SkipLog log;
  auto recs = read_one(path, o, &log);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].line, 1u);
  EXPECT_EQ(recs[1].line, 7u);
  EXPECT_EQ(log.count, 5u);
  ASSERT_EQ(log.first.size(), 5u);
  EXPECT_NE(log.first[0].find(path + ":2: invalid JSON"), std::string::npos) << log.first[0];
  EXPECT_NE(log.first[4].find(path + ":6: expected a JSON object"), std::string::npos) << log.first[4];
  // The parallel scanner agrees, and without skip_bad fails on the FIRST bad line in file order.
  auto tok = Tokenizer::byte_fallback();
  ScanOptions so;
  so.read.skip_bad = true;
  so.batch_lines = 2;  // several batches
  auto scan = scan_files({path}, tok, so);
  EXPECT_EQ(scan.records.size(), 2u);
  EXPECT_EQ(scan.skipped.count, 5u);
  so.read.skip_bad = false;
  expect_error([&] { scan_files({path}, tok, so); }, {path + ":2:", "invalid JSON"});
}

TEST(DataCli, BadInputExitCodesAndMessages) {
  auto dir = temp_dir("data_cli_bad");
  auto bad = write_text(dir / "bad.json", jline("a", "b") + "{\"content\": \"a\", \"summary\": 3}\n" + jline("c", "d"));
  auto r = run_cli("data stats " + bad + " --tokenizer bytes");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("glmlab: error: " + bad + ":2: field \"summary\" must be a string"), std::string::npos) << r.out;

  r = run_cli("data stats " + bad + " --tokenizer bytes --skip-bad");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("records: 2 (1 bad record(s) skipped)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(bad + ":2:"), std::string::npos) << r.out;

  r = run_cli("data stats " + (dir / "missing.json").string() + " --tokenizer bytes");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("missing.json: cannot open"), std::string::npos) << r.out;

  auto empty = write_text(dir / "empty.json", "");
  r = run_cli("data tiny " + empty + " -o " + (dir / "t.json").string() + " --tokenizer bytes");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("empty.json: empty file"), std::string::npos) << r.out;

  std::string big(size_t(2) << 20, 'y');
  auto longf = write_text(dir / "long.json", jline("a", big));
  r = run_cli("data stats " + longf + " --tokenizer bytes");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("long.json:1: line is"), std::string::npos) << r.out;

  auto utf = write_text(dir / "utf.json", jline("\xc3(", "b"));
  r = run_cli("data stats " + utf + " --tokenizer bytes");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("utf.json:1: invalid UTF-8"), std::string::npos) << r.out;
}

TEST(DataCli, TokenizerIsRequired) {
  auto dir = temp_dir("data_cli_tok");
  auto ok = write_text(dir / "ok.json", jline("a", "b"));
  const char* old = std::getenv("GLMLAB_TOKENIZER");
  std::string saved = old ? old : "";
  unsetenv("GLMLAB_TOKENIZER");
  auto r = run_cli("data stats " + ok);
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("pass --tokenizer PATH"), std::string::npos) << r.out;
  setenv("GLMLAB_TOKENIZER", tokenizer_path().c_str(), 1);
  r = run_cli("data stats " + ok + " --json");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\"sentencepiece\""), std::string::npos) << r.out;
  if (old) setenv("GLMLAB_TOKENIZER", saved.c_str(), 1);
  else unsetenv("GLMLAB_TOKENIZER");
}
