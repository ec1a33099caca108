// Big-endian byte reading and writing for Moat's binary formats (file trees, image packages).
// Internal to formats: the parsers use it, nothing outside src/formats should.
//
// Contract: every ByteReader read is bounds-checked against the span it was given and never
// reads past it; a short read fails with kInvalidArgument and a message that names the
// document, the field being read and, where set, the record it belongs to:
//   "<context>: truncated reading <what>[ of <record> <index>] (<n> bytes needed at offset
//   <offset>, <remaining> remain)".
// Readers do not own their bytes and allocate only to build an error; they are not
// thread-safe.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat::formats {

// Decodes a big-endian T. The fixed extent puts the length in the type: callers pass
// first<N>() or subspan<Offset, N>() of a span whose length they have checked.
template <std::unsigned_integral T>
T LoadBigEndian(std::span<const uint8_t, sizeof(T)> bytes) {
  T value = 0;
  for (uint8_t b : bytes) value = static_cast<T>((value << 8) | b);
  return value;
}

class ByteReader {
 public:
  // `context` starts every error message ("file tree"); it and `bytes` must outlive the reader.
  ByteReader(std::span<const uint8_t> bytes, std::string_view context)
      : bytes_(bytes), context_(context) {}

  size_t remaining() const { return bytes_.size() - pos_; }

  // Names the record that later reads belong to, so that errors say "reading the mode of
  // entry 3". `name` must outlive the reader.
  void set_record(std::string_view name, uint64_t index) {
    record_name_ = name;
    record_index_ = index;
  }

  // Fails unless at least `n` bytes remain; `what` names the field ("the header").
  Result<void> Need(uint64_t n, std::string_view what) const;

  template <std::unsigned_integral T>
  Result<T> ReadBigEndian(std::string_view what) {
    MOAT_TRY(Need(sizeof(T), what));
    T value = LoadBigEndian<T>(bytes_.subspan(pos_).template first<sizeof(T)>());
    pos_ += sizeof(T);
    return value;
  }

  // Need(n, what), then Take(n).
  Result<std::span<const uint8_t>> ReadBytes(uint64_t n, std::string_view what) {
    MOAT_TRY(Need(n, what));
    return Take(static_cast<size_t>(n));
  }

  // The next `n` bytes, for a caller that has checked remaining() itself (to report a
  // truncation in its own words). Taking more than remain is a bug and aborts.
  std::span<const uint8_t> Take(size_t n);

 private:
  std::span<const uint8_t> bytes_;
  std::string_view context_;
  size_t pos_ = 0;
  std::string_view record_name_;  // empty until set_record()
  uint64_t record_index_ = 0;
};

// Appenders for the writers that produce what ByteReader reads.
void PutU8(std::vector<uint8_t>& out, uint8_t v);
void PutU16(std::vector<uint8_t>& out, uint16_t v);
void PutU32(std::vector<uint8_t>& out, uint32_t v);
void PutU64(std::vector<uint8_t>& out, uint64_t v);
void PutBytes(std::vector<uint8_t>& out, std::span<const uint8_t> bytes);
void PutBytes(std::vector<uint8_t>& out, std::string_view bytes);

}  // namespace moat::formats
