// The klcal state file (docs/formats.md): encoder, validating decoder, file read and write.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "klcal/formats.hpp"
#include "klcal/state_file.hpp"

namespace klcal::formats {
namespace {

// Sizes of the parts of a file (docs/formats.md, "klcal state file").
constexpr std::size_t header_bytes = 20;  // magic, version, flags, tensor count
constexpr std::size_t crc_bytes = 4;      // CRC-32 trailer
constexpr std::size_t fixed_bytes = 55;   // a record's fields between the name and the counts
constexpr std::size_t min_record_bytes =
    4 + 1 + fixed_bytes + std::size_t{2} * 8;  // 1-byte name, 2 bins

[[noreturn]] void fail(errc code, const std::string& file, const std::string& what) {
  throw error(code, file + ": " + what);
}

// ---- little-endian bytes, one at a time (no struct dumps, any host byte order) -------------

void put_u8(unsigned char*& w, std::uint8_t v) {
  *w++ = v;
}
void put_u32(unsigned char*& w, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) *w++ = static_cast<unsigned char>(v >> (8 * i));
}
void put_u64(unsigned char*& w, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) *w++ = static_cast<unsigned char>(v >> (8 * i));
}
std::uint32_t get_u32(const unsigned char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t(p[i]) << (8 * i);
  return v;
}
std::uint64_t get_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t(p[i]) << (8 * i);
  return v;
}
std::uint32_t bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float float_of(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// CRC-32/ISO-HDLC (zlib's crc32) of n bytes; zlib takes 32-bit lengths, so long inputs go in
// pieces.
std::uint32_t crc32_of(const unsigned char* p, std::size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    const uInt piece = static_cast<uInt>(std::min<std::size_t>(n, std::size_t{1} << 30));
    crc = crc32(crc, p, piece);
    p += piece;
    n -= piece;
  }
  return static_cast<std::uint32_t>(crc);
}

// ---- messages ------------------------------------------------------------------------------

std::string hex32(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", static_cast<unsigned>(v));
  return b;
}

// A tensor name in quotes, control bytes escaped so that a hostile name cannot garble a terminal.
std::string quoted(const std::string& s) {
  std::string o = "'";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f || c == '\\' || c == '\'') {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned>(c));
      o += b;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "'";
}

std::string tensor_label(std::size_t i, const std::string& name) {
  return "tensor " + std::to_string(i) + " (" + quoted(name) + ")";
}

// Why a name cannot be stored ("" when it can).
std::string invalid_name(const std::string& name) {
  if (name.empty() || name.size() > state_file_max_name_bytes) {
    return "name length " + std::to_string(name.size()) + " outside 1.." +
           std::to_string(state_file_max_name_bytes) + " bytes";
  }
  auto nul = name.find('\0');
  if (nul != std::string::npos) return "name has a NUL byte at offset " + std::to_string(nul);
  return {};
}

// Bounds-checked little-endian reads from the body of a file (everything before the CRC).
class body_reader {
 public:
  body_reader(const unsigned char* p, std::size_t end, const std::string& file)
      : p_(p), end_(end), file_(file) {}
  std::size_t pos() const noexcept { return pos_; }
  std::size_t left() const noexcept { return end_ - pos_; }
  // `where` (e.g. "tensor 3 ('conv1')") and `field` name the truncated part in the message.
  const unsigned char* take(std::size_t n, const std::string& where, const char* field) {
    if (left() < n) {
      fail(errc::format_error, file_,
           "truncated in " + where + " " + field + ": need " + std::to_string(n) + " bytes, " +
               std::to_string(left()) + " left");
    }
    const unsigned char* q = p_ + pos_;
    pos_ += n;
    return q;
  }
  std::uint8_t u8(const std::string& where, const char* field) { return *take(1, where, field); }
  std::uint32_t u32(const std::string& where, const char* field) {
    return get_u32(take(4, where, field));
  }
  std::uint64_t u64(const std::string& where, const char* field) {
    return get_u64(take(8, where, field));
  }

 private:
  const unsigned char* p_;
  std::size_t end_;
  const std::string& file_;
  std::size_t pos_ = 0;
};

}  // namespace

std::string encode_states(const std::vector<named_state>& tensors, const std::string& name) {
  if (tensors.size() > state_file_max_tensors) {
    fail(errc::invalid_option, name,
         std::to_string(tensors.size()) + " tensors exceed the limit of " +
             std::to_string(state_file_max_tensors) + " per state file");
  }
  std::unordered_map<std::string, std::size_t> seen;
  seen.reserve(tensors.size());
  std::size_t total = header_bytes + crc_bytes;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const named_state& t = tensors[i];
    if (std::string why = invalid_name(t.name); !why.empty()) {
      fail(errc::invalid_option, name, tensor_label(i, t.name) + ": " + why);
    }
    if (std::string why = describe_invalid(t.state); !why.empty()) {
      fail(errc::invalid_option, name, tensor_label(i, t.name) + ": " + why);
    }
    auto [it, fresh] = seen.emplace(t.name, i);
    if (!fresh) {
      fail(errc::invalid_option, name,
           "tensors " + std::to_string(it->second) + " and " + std::to_string(i) +
               " are both named " + quoted(t.name) + " (names must be distinct)");
    }
    total += 4 + t.name.size() + fixed_bytes + 8 * t.state.counts.size();
  }
  std::string out(total, '\0');
  auto* w = reinterpret_cast<unsigned char*>(out.data());
  std::memcpy(w, state_file_magic, 8);
  w += 8;
  put_u32(w, state_file_version);
  put_u32(w, 0);  // flags: none defined in version 1
  put_u32(w, static_cast<std::uint32_t>(tensors.size()));
  for (const named_state& t : tensors) {
    const calibrator_state& s = t.state;
    put_u32(w, static_cast<std::uint32_t>(t.name.size()));
    w = std::copy(t.name.begin(), t.name.end(), w);
    put_u8(w, static_cast<std::uint8_t>(s.policy));
    put_u8(w, static_cast<std::uint8_t>(s.spec.kind));
    put_u8(w, s.range_done ? 1 : 0);
    put_u32(w, static_cast<std::uint32_t>(s.spec.bins));
    put_u32(w, bits_of(s.spec.lo));
    put_u32(w, bits_of(s.spec.hi));
    put_u32(w, static_cast<std::uint32_t>(s.exponent));
    put_u64(w, s.stats.finite_count);
    put_u64(w, s.stats.nan_count);
    put_u64(w, s.stats.inf_count);
    put_u32(w, bits_of(s.stats.max_abs));
    put_u32(w, bits_of(s.stats.min));
    put_u32(w, bits_of(s.stats.max));
    for (std::uint64_t c : s.counts) put_u64(w, c);
  }
  const auto* base = reinterpret_cast<const unsigned char*>(out.data());
  put_u32(w, crc32_of(base, total - crc_bytes));
  return out;
}

std::vector<named_state> decode_states(const void* data, std::size_t n, const std::string& name) {
  const auto* p = static_cast<const unsigned char*>(data);
  // Magic and version first: a file of another kind or version is named as such even when it is
  // also short.
  if (n == 0) fail(errc::format_error, name, "empty file, not a klcal state file");
  if (std::memcmp(p, state_file_magic, std::min<std::size_t>(n, 8)) != 0) {
    fail(errc::format_error, name,
         "not a klcal state file (it does not start with \"KLCALST\\0\")");
  }
  if (n >= 12) {
    const std::uint32_t version = get_u32(p + 8);
    if (version != state_file_version) {
      fail(errc::format_error, name,
           "unsupported state file version " + std::to_string(version) +
               " (supported: " + std::to_string(state_file_version) + ")");
    }
  }
  if (n < header_bytes + crc_bytes) {
    fail(errc::format_error, name,
         "truncated: " + std::to_string(n) + " bytes, a state file has at least " +
             std::to_string(header_bytes + crc_bytes) + " (20-byte header, 4-byte CRC-32)");
  }
  const std::size_t body = n - crc_bytes;
  body_reader r(p, body, name);
  r.take(12, "header", "magic and version");
  const std::uint32_t flags = r.u32("header", "flags");
  if (flags != 0) {
    fail(errc::format_error, name,
         "header flags " + hex32(flags) + ": version 1 defines no flags (must be 0)");
  }
  const std::uint32_t count = r.u32("header", "tensor count");
  if (count > state_file_max_tensors) {
    fail(errc::format_error, name,
         "tensor count " + std::to_string(count) + " exceeds the limit of " +
             std::to_string(state_file_max_tensors));
  }
  // Every record takes at least min_record_bytes: a count the bytes cannot hold is rejected
  // before anything is reserved for it.
  if (count > r.left() / min_record_bytes) {
    fail(errc::format_error, name,
         "truncated: " + std::to_string(count) + " tensors need at least " +
             std::to_string(std::uint64_t(count) * min_record_bytes) + " bytes, " +
             std::to_string(r.left()) + " left");
  }

  // Pass 1: structure (every length checked against the bytes left before it is used).
  std::vector<named_state> out;
  out.reserve(count);
  std::vector<std::uint8_t> range_done_raw;
  range_done_raw.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    std::string where = "tensor " + std::to_string(i);
    const std::uint32_t len = r.u32(where, "name length");
    if (len == 0 || len > state_file_max_name_bytes) {
      fail(errc::format_error, name,
           where + ": name length " + std::to_string(len) + " outside 1.." +
               std::to_string(state_file_max_name_bytes));
    }
    const unsigned char* np = r.take(len, where, "name");
    named_state t;
    t.name.assign(reinterpret_cast<const char*>(np), len);
    where = tensor_label(i, t.name);
    calibrator_state& s = t.state;
    s.policy = static_cast<range_policy>(r.u8(where, "policy"));
    s.spec.kind = static_cast<layout>(r.u8(where, "layout"));
    range_done_raw.push_back(r.u8(where, "range_done"));
    s.range_done = range_done_raw.back() != 0;
    const auto bins = static_cast<std::int32_t>(r.u32(where, "bins"));
    if (bins < 2 || bins > max_bins) {
      fail(errc::format_error, name,
           where + ": bins " + std::to_string(bins) + " outside 2.." + std::to_string(max_bins));
    }
    s.spec.bins = bins;
    s.spec.lo = float_of(r.u32(where, "lo"));
    s.spec.hi = float_of(r.u32(where, "hi"));
    s.exponent = static_cast<std::int32_t>(r.u32(where, "exponent"));
    s.stats.finite_count = r.u64(where, "stats.finite_count");
    s.stats.nan_count = r.u64(where, "stats.nan_count");
    s.stats.inf_count = r.u64(where, "stats.inf_count");
    s.stats.max_abs = float_of(r.u32(where, "stats.max_abs"));
    s.stats.min = float_of(r.u32(where, "stats.min"));
    s.stats.max = float_of(r.u32(where, "stats.max"));
    const unsigned char* cp = r.take(std::size_t(bins) * 8, where, "counts");
    s.counts.resize(static_cast<std::size_t>(bins));
    for (std::size_t j = 0; j < s.counts.size(); ++j) s.counts[j] = get_u64(cp + 8 * j);
    out.push_back(std::move(t));
  }
  if (r.left() != 0) {
    fail(errc::format_error, name,
         std::to_string(r.left()) + " unexpected bytes after the last of the " +
             std::to_string(count) + " tensors (before the CRC-32)");
  }
  // Pass 2: integrity, then meaning. The CRC comes first so that corruption is reported as
  // such, not as whichever field it happened to hit.
  const std::uint32_t stored = get_u32(p + body);
  const std::uint32_t computed = crc32_of(p, body);
  if (stored != computed) {
    fail(errc::format_error, name,
         "CRC-32 mismatch: stored " + hex32(stored) + ", computed " + hex32(computed) +
             " (the file is corrupt)");
  }
  std::unordered_map<std::string, std::size_t> seen;
  seen.reserve(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    const named_state& t = out[i];
    if (auto nul = t.name.find('\0'); nul != std::string::npos) {
      fail(errc::format_error, name,
           tensor_label(i, t.name) + ": name has a NUL byte at offset " + std::to_string(nul));
    }
    if (range_done_raw[i] > 1) {
      fail(errc::format_error, name,
           tensor_label(i, t.name) + ": range_done " + std::to_string(range_done_raw[i]) +
               " is not 0 or 1");
    }
    if (std::string why = describe_invalid(t.state); !why.empty()) {
      fail(errc::format_error, name, tensor_label(i, t.name) + ": " + why);
    }
    auto [it, fresh] = seen.emplace(t.name, i);
    if (!fresh) {
      fail(errc::format_error, name,
           "tensors " + std::to_string(it->second) + " and " + std::to_string(i) +
               " are both named " + quoted(t.name));
    }
  }
  return out;
}

void write_state_file(const std::string& path, const std::vector<named_state>& tensors) {
  write_file_atomic(path, encode_states(tensors, path));
}

std::vector<named_state> read_state_file(const std::string& path) {
  auto src = open_file(path);
  const std::uint64_t size = src->size();
  if (size > std::numeric_limits<std::size_t>::max()) {
    fail(errc::io_error, path, "too large to read into memory");
  }
  std::string bytes(static_cast<std::size_t>(size), '\0');
  std::size_t got = 0;
  while (got < bytes.size()) {
    std::size_t k = src->read_at(got, bytes.data() + got, bytes.size() - got);
    if (k == 0) {
      fail(errc::io_error, path,
           "file shrank while being read (" + std::to_string(got) + " of " + std::to_string(size) +
               " bytes)");
    }
    got += k;
  }
  return decode_states(bytes.data(), bytes.size(), path);
}

}  // namespace klcal::formats
