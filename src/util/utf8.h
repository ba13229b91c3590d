// UTF-8 text: validation (with the byte offset of the first bad byte) and code-point counting.
// Strict RFC 3629: no overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
#pragma once
#include <cstddef>
#include <optional>
#include <string_view>

namespace glmlab::utf8 {

// Byte offset of the first byte that does not start a valid UTF-8 sequence; nullopt when valid.
std::optional<size_t> first_invalid(std::string_view s);

// Number of code points of valid UTF-8 text (counts the bytes that are not continuation bytes).
size_t count_code_points(std::string_view s);

}  // namespace glmlab::utf8
