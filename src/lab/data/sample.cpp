// Generator of the embedded AdvertiseGen-like sample (see sample.h).
#include "lab/data/sample.h"

#include <algorithm>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "lab/data/sample_vocab.h"
#include "util/file.h"
#include "util/utf8.h"

namespace glmlab::lab {

namespace {

namespace sv = sample_vocab;

// SplitMix64: small, fast, and identical everywhere.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return size_t((unsigned __int128)next() * n >> 64); }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  // Approximately standard normal (Irwin-Hall with 12 terms), bounded to [-6, 6].
  double normal() {
    double s = 0;
    for (int i = 0; i < 12; ++i) s += uniform();
    return s - 6.0;
  }
  template <typename T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }
  template <typename T>
  size_t weighted(const std::vector<T>& v) {
    int total = 0;
    for (const auto& x : v) total += x.weight;
    int r = int(below(size_t(total)));
    for (size_t i = 0; i < v.size(); ++i)
      if ((r -= v[i].weight) < 0) return i;
    return v.size() - 1;
  }
};

// Number of attributes per record including 类型 (index = count), relative weights.
constexpr int kAttrCountWeights[] = {0, 0, 20, 20, 80, 110, 160, 180, 135, 120, 72, 52, 30, 11, 9, 2, 4};
constexpr size_t kAttrCountMax = std::size(kAttrCountWeights) - 1;

size_t chars(std::string_view s) { return utf8::count_code_points(s); }

std::string fill(std::string_view tmpl, std::string_view key, std::string_view value) {
  std::string out(tmpl);
  for (size_t at; (at = out.find(key)) != std::string::npos;) out.replace(at, key.size(), value);
  return out;
}

struct Attr {
  size_t order;  // position of the key in the type's key list (类型 = 0)
  std::string_view key, value;
};

std::vector<Attr> draw_attributes(Rng& rng, const sv::ProductType& type) {
  std::vector<sv::Attribute> pool = sv::shared_attributes();
  pool.insert(pool.end(), type.attributes.begin(), type.attributes.end());
  int total = 0;
  for (int w : kAttrCountWeights) total += w;
  int r = int(rng.below(size_t(total)));
  size_t count = 2;
  for (size_t c = 0; c <= kAttrCountMax; ++c)
    if ((r -= kAttrCountWeights[c]) < 0) {
      count = c;
      break;
    }
  std::vector<Attr> attrs;
  for (int tries = 0; attrs.size() + 1 < count && tries < 200; ++tries) {
    size_t k = rng.weighted(pool);
    std::string_view value = rng.pick(pool[k].values);
    bool dup = std::any_of(attrs.begin(), attrs.end(), [&](const Attr& a) { return a.key == pool[k].key && a.value == value; });
    if (!dup) attrs.push_back({k + 1, pool[k].key, value});
  }
  std::stable_sort(attrs.begin(), attrs.end(), [](const Attr& a, const Attr& b) { return a.order < b.order; });
  return attrs;
}

std::string make_content(const sv::ProductType& type, const std::vector<Attr>& attrs, std::vector<Attr>& used) {
  std::string content = "类型#" + std::string(type.name);
  for (const auto& a : attrs) {
    std::string part = "*" + std::string(a.key) + "#" + std::string(a.value);
    if (chars(content) + chars(part) > kSampleContentMaxChars) break;
    content += part;
    used.push_back(a);
  }
  // The shortest possible record (类型#裤 + one short attribute) still reaches the minimum; pad with
  // a style attribute just in case a future vocabulary change makes it shorter.
  while (chars(content) < kSampleContentMinChars) content += "*风格#简约";
  return content;
}

std::string make_summary(Rng& rng, const sv::ProductType& type, const std::vector<Attr>& attrs) {
  // Target length: normal, median about 104 (the last clause overshoots by ~6 on average).
  const double t = 104.0 + 29.0 * rng.normal();
  const size_t target = size_t(std::clamp(t, double(kSampleSummaryMinChars), double(kSampleSummaryMaxChars)));

  std::string_view item = rng.pick(type.items);
  for (const auto& a : attrs)
    if (a.key == type.item_key) item = a.value;

  std::vector<std::string> clauses;
  std::vector<Attr> order = attrs;
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  for (const auto& a : order) {
    const std::vector<std::string_view>* options = &sv::detail_clauses();
    for (const auto& kc : sv::key_clauses())
      if (kc.key == a.key) options = &kc.clauses;
    clauses.push_back(fill(rng.pick(*options), "{v}", a.value));
  }
  std::vector<std::string_view> fill_order = sv::fillers();
  for (size_t i = fill_order.size(); i > 1; --i) std::swap(fill_order[i - 1], fill_order[rng.below(i)]);

  std::string summary = fill(rng.pick(sv::openings()), "{item}", item);
  size_t len = chars(summary), in_sentence = 1, next_clause = 0, next_filler = 0;
  while (len + 1 < target || len + 1 < kSampleSummaryMinChars) {
    std::string clause = next_clause < clauses.size() ? clauses[next_clause++]
                         : next_filler < fill_order.size() ? std::string(fill_order[next_filler++])
                                                           : std::string(rng.pick(sv::fillers()));
    std::string sep = in_sentence >= 2 + rng.below(2) ? "。" : "，";
    if (sep == "。") in_sentence = 0;
    if (len + chars(sep) + chars(clause) + 1 > kSampleSummaryMaxChars) break;
    summary += sep + clause;
    len = chars(summary);
    ++in_sentence;
  }
  return summary + "。";
}

}  // namespace

std::vector<Record> embedded_sample(size_t n, uint64_t seed) {
  // n × the most a record takes, without overflowing: more than 2^64 bytes is "too much" as well.
  const uint64_t need = n > UINT64_MAX / kSampleRecordMaxBytes ? UINT64_MAX : uint64_t(n) * kSampleRecordMaxBytes;
  check_memory(need, fmt::format("the embedded sample of {} records", n));
  std::vector<Record> out;
  out.reserve(n);
  const auto& types = sv::product_types();
  for (size_t i = 0; i < n; ++i) {
    Rng rng{seed * 0xD1B54A32D192ED03ull + i};
    rng.next();
    const auto& type = types[rng.weighted(types)];
    std::vector<Attr> used;
    Record r;
    r.content = make_content(type, draw_attributes(rng, type), used);
    r.summary = make_summary(rng, type, used);
    r.file = "<embedded>";
    r.line = i + 1;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace glmlab::lab
