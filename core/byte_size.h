// Byte counts on command lines and in specs ("4MiB", "512K", "65536"): one grammar and one
// parser for every flag that takes a size (qgrad-train --bucket-bytes/--min-compress-bytes,
// qgrad-ps --max-message-bytes, the burst of a --link spec).
//
//   BYTES  := DIGITS [ "." DIGITS ] [ UNIT ]
//   UNIT   := "B" | "K" | "KiB" | "M" | "MiB" | "G" | "GiB"      (K, M, G are binary: 2^10, ...)
//
// Case matters: "4mib" and "4MB" are refused rather than guessed at (tc's "mbit" is a rate in
// bits, and an SI megabyte is not what the flags mean). No sign, no spaces, no exponent. A
// fraction is allowed when the result is a whole number of bytes ("1.5KiB" = 1536, "0.5" is
// refused). Values that do not fit in 64 bits (size_t) are refused, not wrapped. Range limits
// of a particular flag (e.g. at most 2 GiB) are the caller's: this parser checks the grammar.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qgrad {

// The byte count `text` means, or nullopt with the reason in *why (when why is not null):
// "no digits", "unknown unit 'mib' (valid: ...)", "more than 64 bits", ...
std::optional<uint64_t> try_parse_byte_size(std::string_view text, std::string* why = nullptr);

// As above; throws InvalidArgument "<what>: '<text>' is not a byte count (<why>; e.g. 4MiB,
// 65536)" where `what` names the flag ("--bucket-bytes").
uint64_t parse_byte_size(std::string_view text, std::string_view what);

// "B, K, KiB, M, MiB, G, GiB", for help texts.
std::string_view byte_size_units();

}  // namespace qgrad
