// The embedded sample: a seeded generator of AdvertiseGen-format records (attribute lists such as
// 类型#裙*材质#针织*颜色#白色*风格#清新 and Chinese ad-copy summaries built from glmlab's own phrase
// vocabulary, lab/sample_vocab.h), so demos and benchmarks run on a machine with no data files.
// Length targets (characters, as in the real dev split): content 10..126 (median about 44),
// summary 60..237 (median about 109); both bounds are enforced for every record.
// Deterministic on every platform (own RNG and arithmetic); record i depends only on (seed, i), so
// a smaller sample is a prefix of a larger one with the same seed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lab/data/advertisegen.h"

namespace glmlab::lab {

constexpr size_t kSampleContentMinChars = 10, kSampleContentMaxChars = 126;
constexpr size_t kSampleSummaryMinChars = 60, kSampleSummaryMaxChars = 237;

// Most bytes of memory one record of the sample takes (the Record and its text: every character of
// the vocabulary is at most 3 bytes of UTF-8), and the same for its JSON line (format_record_line).
constexpr size_t kSampleRecordMaxBytes = sizeof(Record) + 3 * (kSampleContentMaxChars + kSampleSummaryMaxChars + 1);
constexpr size_t kSampleLineMaxBytes = 64 + 3 * (kSampleContentMaxChars + kSampleSummaryMaxChars + 1);

// Records with file "<embedded>" and line i + 1. n records must fit in the available memory (checked
// before anything is allocated: a glmlab::Error naming n otherwise).
std::vector<Record> embedded_sample(size_t n = 100, uint64_t seed = 0);

}  // namespace glmlab::lab
