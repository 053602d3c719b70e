// Tests of the klcal state file: byte layout, round trips, and rejection of every kind of bad file.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "klcal/formats.hpp"
#include "klcal/state_file.hpp"

namespace kf = klcal::formats;
using klcal::calibrator_state;
using klcal::errc;
using klcal::layout;
using klcal::named_state;
using klcal::range_policy;

namespace {

std::uint32_t bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Bitwise CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320, init and xor-out 0xFFFFFFFF),
// written from the definition: independent of zlib and of the code under test.
std::uint32_t crc32_ref(const std::string& s) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : s) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

// Little-endian byte builder for hand-made files (does not use the encoder).
struct byte_builder {
  std::string s;
  byte_builder& u8(std::uint8_t v) {
    s += static_cast<char>(v);
    return *this;
  }
  byte_builder& u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
    return *this;
  }
  byte_builder& u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
    return *this;
  }
  byte_builder& raw(const std::string& r) {
    s += r;
    return *this;
  }
};

// One record's fields as stored; the defaults are a valid empty fixed abs state with 2 bins.
struct record {
  std::string name = "t";
  std::uint32_t name_len = 0xFFFFFFFFu;  // stored length; all ones: name.size()
  std::uint8_t policy = 0, kind = 0, range_done = 1;
  std::uint32_t bins = 2;
  std::uint32_t lo = 0, hi = 0x3f800000u;  // 0, 1
  std::uint32_t exponent = static_cast<std::uint32_t>(-64);
  std::uint64_t finite = 0, nan = 0, infs = 0;
  std::uint32_t max_abs = 0, min = 0x7f800000u, max = 0xff800000u;  // 0, +inf, -inf
  std::vector<std::uint64_t> counts = {0, 0};
};

std::string record_bytes(const record& r) {
  byte_builder b;
  b.u32(r.name_len == 0xFFFFFFFFu ? static_cast<std::uint32_t>(r.name.size()) : r.name_len)
      .raw(r.name)
      .u8(r.policy)
      .u8(r.kind)
      .u8(r.range_done)
      .u32(r.bins)
      .u32(r.lo)
      .u32(r.hi)
      .u32(r.exponent)
      .u64(r.finite)
      .u64(r.nan)
      .u64(r.infs)
      .u32(r.max_abs)
      .u32(r.min)
      .u32(r.max);
  for (auto c : r.counts) b.u64(c);
  return b.s;
}

struct header {
  std::string magic = std::string("KLCALST\0", 8);
  std::uint32_t version = 1, flags = 0;
  std::int64_t count = -1;  // -1: the number of records
};

// A whole file with a correct CRC over whatever was put in.
std::string make_file(const std::vector<record>& recs, const header& h = {},
                      const std::string& extra = "") {
  byte_builder b;
  b.raw(h.magic).u32(h.version).u32(h.flags);
  b.u32(static_cast<std::uint32_t>(h.count < 0 ? std::int64_t(recs.size()) : h.count));
  for (const auto& r : recs) b.raw(record_bytes(r));
  b.raw(extra);
  return b.u32(crc32_ref(b.s)).s;
}

std::vector<named_state> decode(const std::string& bytes, const std::string& name = "mem.klst") {
  return kf::decode_states(bytes.data(), bytes.size(), name);
}

// Runs f and returns the message of the klcal::error it throws (the test fails otherwise).
template <class F>
std::string error_of(F&& f, errc expect = errc::format_error) {
  try {
    f();
  } catch (const klcal::error& e) {
    EXPECT_EQ(e.code().code, expect) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no klcal::error thrown";
  return {};
}

std::string decode_error(const std::string& bytes) {
  return error_of([&] { decode(bytes); });
}

// Whether `msg` contains `part` (use as EXPECT_TRUE(has(msg, part))).
::testing::AssertionResult has(const std::string& msg, const std::string& part) {
  if (msg.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message: " << msg << "\nexpected in it: " << part;
}

// Field-by-field, bit-for-bit comparison (klcal::operator== lives elsewhere; this test stands
// on its own).
void expect_same(const named_state& a, const named_state& b) {
  SCOPED_TRACE(a.name);
  EXPECT_EQ(a.name, b.name);
  const calibrator_state& x = a.state;
  const calibrator_state& y = b.state;
  EXPECT_EQ(x.policy, y.policy);
  EXPECT_EQ(x.spec.kind, y.spec.kind);
  EXPECT_EQ(x.spec.bins, y.spec.bins);
  EXPECT_EQ(bits(x.spec.lo), bits(y.spec.lo));
  EXPECT_EQ(bits(x.spec.hi), bits(y.spec.hi));
  EXPECT_EQ(x.exponent, y.exponent);
  EXPECT_EQ(x.range_done, y.range_done);
  EXPECT_EQ(x.counts, y.counts);
  EXPECT_EQ(x.stats.finite_count, y.stats.finite_count);
  EXPECT_EQ(x.stats.nan_count, y.stats.nan_count);
  EXPECT_EQ(x.stats.inf_count, y.stats.inf_count);
  EXPECT_EQ(bits(x.stats.max_abs), bits(y.stats.max_abs));
  EXPECT_EQ(bits(x.stats.min), bits(y.stats.min));
  EXPECT_EQ(bits(x.stats.max), bits(y.stats.max));
}

std::vector<std::uint64_t> random_counts(std::int32_t bins, std::uint32_t seed) {
  std::mt19937_64 g(seed);
  std::vector<std::uint64_t> c(static_cast<std::size_t>(bins));
  for (auto& v : c) v = g() >> (g() % 64);  // every magnitude, including all 64 bits
  return c;
}

named_state fixed_state(std::string name, layout kind, std::int32_t bins, float lo, float hi) {
  named_state t{std::move(name), {}};
  auto& s = t.state;
  s.policy = range_policy::fixed;
  s.spec = {kind, bins, lo, hi};
  s.counts = random_counts(bins, static_cast<std::uint32_t>(bins));
  s.stats = {12345, 7, 3, 2.5f, -2.5f, 1.75f};
  return t;
}

// Several tensors of every policy, including the edge values of each field.
std::vector<named_state> sample_states() {
  std::vector<named_state> v;
  v.push_back(fixed_state("conv1/weight", layout::abs, 2048, 0.0f, 3.5f));
  v.push_back(fixed_state("fc.out \xce\xb1", layout::signed_, 8001, -1e-3f, 7e30f));
  v.push_back(fixed_state("tiny", layout::abs, 2, 0.0f, 1e-38f));  // subnormal hi
  {
    named_state t{"two_pass.before", {}};  // before end_range_pass: placeholder range, no counts
    t.state.policy = range_policy::two_pass;
    t.state.range_done = false;
    t.state.spec = {layout::signed_, 8001, -std::ldexp(1.0f, -64), std::ldexp(1.0f, -64)};
    t.state.counts.assign(8001, 0);
    t.state.stats = {5, 0, 1, 0.0f, -0.0f, 0.0f};  // only zeros seen so far (signed zeros kept)
    v.push_back(t);
  }
  {
    named_state t{"two_pass.after", {}};
    t.state.policy = range_policy::two_pass;
    t.state.spec = {layout::abs, 2047, 0.0f, 6.25f};
    t.state.counts = random_counts(2047, 99);
    t.state.stats = {1000, 0, 0, 6.25f, -6.25f, 0.5f};
    v.push_back(t);
  }
  {
    named_state t{"empty", {}};  // nothing seen: stats at their defaults
    t.state.policy = range_policy::two_pass;
    t.state.spec = {layout::abs, 16, 0.0f, std::ldexp(1.0f, -64)};
    t.state.counts.assign(16, 0);
    v.push_back(t);
  }
  for (std::int32_t e : {-64, 0, 5, 127}) {
    named_state t{"streaming" + std::to_string(e), {}};
    t.state.policy = range_policy::streaming;
    t.state.exponent = e;
    t.state.spec = {layout::abs, e == 127 ? 1 << 16 : 4, 0.0f, std::ldexp(1.0f, e)};
    t.state.counts = random_counts(t.state.spec.bins, static_cast<std::uint32_t>(e + 100));
    t.state.stats = {~std::uint64_t{0}, 1, 2, 3.0f, -3.0f, 3.0f};
    v.push_back(t);
  }
  return v;
}

// The tiny file of StateFile.ByteLayout, byte by byte from docs/formats.md; its CRC-32 was
// computed with Python's zlib.crc32 and is checked again by crc32_ref below.
const unsigned char tiny_file[] = {
    'K',  'L',  'C',  'A',  'L', 'S', 'T', 0,  // magic
    0x01, 0x00, 0x00, 0x00,                    // version 1
    0x00, 0x00, 0x00, 0x00,                    // flags
    0x01, 0x00, 0x00, 0x00,                    // tensor count 1
    0x02, 0x00, 0x00, 0x00,                    // name length 2
    'a',  'b',                                 // name
    0x00,                                      // policy fixed
    0x00,                                      // layout abs
    0x01,                                      // range_done
    0x02, 0x00, 0x00, 0x00,                    // bins 2
    0x00, 0x00, 0x00, 0x00,                    // lo 0.0f
    0x00, 0x00, 0x80, 0x3f,                    // hi 1.0f
    0xc0, 0xff, 0xff, 0xff,                    // exponent -64
    0x03, 0,    0,    0,    0,   0,   0,   0,  // finite_count 3
    0x01, 0,    0,    0,    0,   0,   0,   0,  // nan_count 1
    0x02, 0,    0,    0,    0,   0,   0,   0,  // inf_count 2
    0x00, 0x00, 0x00, 0x3f,                    // max_abs 0.5f
    0x00, 0x00, 0x80, 0x3e,                    // min 0.25f
    0x00, 0x00, 0x00, 0x3f,                    // max 0.5f
    0x01, 0,    0,    0,    0,   0,   0,   0,  // counts[0] 1
    0x02, 0,    0,    0,    0,   0,   0,   0,  // counts[1] 2
    0x3e, 0xb5, 0xf8, 0xfa,                    // CRC-32 0xfaf8b53e
};

static_assert(sizeof tiny_file == 101, "20-byte header, 77-byte record, 4-byte CRC");

std::string tiny_bytes() {
  return std::string(reinterpret_cast<const char*>(tiny_file), 101);
}

named_state tiny_state() {
  named_state t{"ab", {}};
  t.state.policy = range_policy::fixed;
  t.state.spec = {layout::abs, 2, 0.0f, 1.0f};
  t.state.counts = {1, 2};
  t.state.stats = {3, 1, 2, 0.5f, 0.25f, 0.5f};
  return t;
}

// A fresh directory under the test's working directory, removed (with its files) at the end.
class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = "state_file_test.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~temp_dir() {
    for (const auto& f : list()) {
      std::string p = path_ + "/" + f;
      if (::unlink(p.c_str()) != 0) ::rmdir(p.c_str());
    }
    ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }
  std::set<std::string> list() const {
    std::set<std::string> out;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") out.insert(n);
      }
      ::closedir(d);
    }
    return out;
  }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::string out;
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

// ---- layout ---------------------------------------------------------------------------------

TEST(StateFile, ReferenceCrcMatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32_ref("123456789"), 0xCBF43926u);
  EXPECT_EQ(crc32_ref(tiny_bytes().substr(0, 97)), 0xfaf8b53eu);
}

TEST(StateFile, ByteLayoutOfATinyFile) {
  EXPECT_EQ(kf::encode_states({tiny_state()}), tiny_bytes());
  auto v = decode(tiny_bytes());
  ASSERT_EQ(v.size(), 1u);
  expect_same(v[0], tiny_state());
}

TEST(StateFile, TestBuilderAgreesWithTheHandWrittenBytes) {
  // The builder that makes the bad files below writes the same layout as the literal bytes.
  record r;
  r.name = "ab";
  r.finite = 3;
  r.nan = 1;
  r.infs = 2;
  r.max_abs = 0x3f000000u;
  r.min = 0x3e800000u;
  r.max = 0x3f000000u;
  r.counts = {1, 2};
  EXPECT_EQ(make_file({r}), tiny_bytes());
}

TEST(StateFile, EmptyListRoundTrip) {
  const std::string expected("KLCALST\0\x01\0\0\0\0\0\0\0\0\0\0\0\x89\xfc\xcf\x9c", 24);
  EXPECT_EQ(kf::encode_states({}), expected);
  EXPECT_TRUE(decode(expected).empty());
}

// ---- round trips ----------------------------------------------------------------------------

TEST(StateFile, RoundTripOfEveryPolicyIsBitIdentical) {
  const auto states = sample_states();
  const std::string bytes = kf::encode_states(states);
  auto back = decode(bytes);
  ASSERT_EQ(back.size(), states.size());
  for (std::size_t i = 0; i < states.size(); ++i) expect_same(back[i], states[i]);
  EXPECT_EQ(kf::encode_states(back), bytes);  // and the bytes again
}

TEST(StateFile, FileRoundTripReplacesTheTargetAndLeavesNoTemporary) {
  temp_dir dir;
  const std::string path = dir.path() + "/calib.klst";
  kf::write_state_file(path, {tiny_state()});
  EXPECT_EQ(slurp(path), tiny_bytes());
  const auto states = sample_states();
  kf::write_state_file(path, states);  // over the existing file
  auto back = kf::read_state_file(path);
  ASSERT_EQ(back.size(), states.size());
  for (std::size_t i = 0; i < states.size(); ++i) expect_same(back[i], states[i]);
  EXPECT_EQ(dir.list(), std::set<std::string>{"calib.klst"});
}

// ---- truncation and corruption ---------------------------------------------------------------

TEST(StateFile, EveryTruncationIsAFormatError) {
  std::vector<named_state> two = {tiny_state(), tiny_state()};
  two[1].name = "cd";
  two[1].state.counts = {5, 6};
  const std::string bytes = kf::encode_states(two);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE(n);
    std::string msg = error_of([&] { kf::decode_states(bytes.data(), n, "cut.klst"); });
    EXPECT_EQ(msg.rfind("cut.klst: ", 0), 0u) << msg;
  }
}

TEST(StateFile, TruncationMessageNamesTensorFieldAndSizes) {
  std::vector<named_state> v = {tiny_state(), tiny_state()};
  v[1].name = "conv1";
  v[1].state.spec.bins = 2048;
  v[1].state.counts.assign(2048, 1);
  v[1].state.stats = {2048, 0, 0, 0.5f, 0.5f, 0.5f};
  std::string bytes = kf::encode_states(v, "x");
  // Keep 12 bytes of the counts, then 4 bytes that the reader takes for the CRC.
  const std::size_t counts_at = 20 + (4 + 2 + 55 + 16) + (4 + 5 + 55);
  bytes.resize(counts_at + 12 + 4);
  EXPECT_TRUE(has(error_of([&] { decode(bytes, "state.klst"); }),
                  "state.klst: truncated in tensor 1 ('conv1') counts: need 16384 bytes, 12 left"));
}

TEST(StateFile, EveryFlippedByteIsAFormatError) {
  const std::string good = kf::encode_states({tiny_state()});
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (unsigned mask : {0x01u, 0x80u, 0xffu}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      SCOPED_TRACE(std::to_string(i) + " ^ " + std::to_string(mask));
      error_of([&] { decode(bad); });
    }
  }
}

TEST(StateFile, CrcMismatchIsReportedAsCorruption) {
  std::string bad = tiny_bytes();
  bad[60] ^= 0x10;  // the top byte of the NaN count: every field is still plausible
  EXPECT_TRUE(has(decode_error(bad), "CRC-32 mismatch: stored 0xfaf8b53e, computed 0x"));
  bad = tiny_bytes();
  bad[100] ^= 0x01;  // the CRC itself (its top byte)
  EXPECT_TRUE(has(decode_error(bad), "CRC-32 mismatch: stored 0xfbf8b53e, computed 0xfaf8b53e"));
}

// ---- header ---------------------------------------------------------------------------------

TEST(StateFile, BadMagicVersionFlagsAndCount) {
  header h;
  h.magic = std::string("KLCALSU\0", 8);
  EXPECT_TRUE(has(decode_error(make_file({}, h)), "not a klcal state file"));
  EXPECT_TRUE(has(decode_error(std::string("\x93NUMPY\x01\x00", 8)), "not a klcal state file"));
  EXPECT_TRUE(has(decode_error(""), "empty file"));
  h = {};
  h.version = 2;
  EXPECT_TRUE(has(decode_error(make_file({record{}}, h)),
                  "unsupported state file version 2 (supported: 1)"));
  // The version is named even when the rest of the file is missing.
  EXPECT_TRUE(
      has(decode_error(make_file({}, h).substr(0, 12)), "unsupported state file version 2"));
  h = {};
  h.flags = 4;
  EXPECT_TRUE(has(decode_error(make_file({}, h)), "header flags 0x00000004"));
  h = {};
  h.count = 1000001;
  EXPECT_TRUE(
      has(decode_error(make_file({}, h)), "tensor count 1000001 exceeds the limit of 1000000"));
  h.count = 0xFFFFFFFF;
  EXPECT_TRUE(has(decode_error(make_file({}, h)), "tensor count 4294967295 exceeds"));
  // A count within the limit that the bytes cannot hold: rejected before any allocation.
  h.count = 1000000;
  EXPECT_TRUE(has(decode_error(make_file({record{}}, h)),
                  "truncated: 1000000 tensors need at least 76000000 bytes, 76 left"));
  h.count = 0;
  EXPECT_TRUE(
      has(decode_error(make_file({record{}}, h)), "76 unexpected bytes after the last of the 0"));
}

TEST(StateFile, TrailingBytesAreRejected) {
  EXPECT_TRUE(has(decode_error(make_file({record{}}, {}, "x")),
                  "1 unexpected bytes after the last of the 1 tensors"));
  std::string longer = tiny_bytes() + '\0';  // after the CRC
  error_of([&] { decode(longer); });
}

// ---- per-tensor fields (each file has a correct CRC, so the field check is what rejects it) --

struct bad_case {
  const char* what;
  record r;
  const char* message;
};

std::vector<bad_case> bad_records() {
  std::vector<bad_case> v;
  auto add = [&](const char* what, const char* message, auto edit) {
    record r;
    r.name = "conv1";
    edit(r);
    v.push_back({what, r, message});
  };
  add("zero name length", "tensor 0: name length 0 outside 1..4096", [](record& r) {
    r.name = "";
    r.bins = 3;  // a record as long as the shortest valid one, so that the count fits
    r.counts = {0, 0, 0};
  });
  add("long name", "tensor 0: name length 4097 outside 1..4096",
      [](record& r) { r.name.assign(4097, 'n'); });
  add("huge name length", "truncated in tensor 0 name: need 4000 bytes, 76 left",
      [](record& r) { r.name_len = 4000; });
  add("NUL in name", "name has a NUL byte at offset 1",
      [](record& r) { r.name = std::string("a\0b", 3); });
  add("policy", "tensor 0 ('conv1'): policy 3 is not 0 (fixed), 1 (two_pass) or 2 (streaming)",
      [](record& r) { r.policy = 3; });
  add("layout", "layout 2 is not 0 (abs) or 1 (signed)", [](record& r) { r.kind = 2; });
  add("range_done", "range_done 2 is not 0 or 1", [](record& r) { r.range_done = 2; });
  add("bins 1", "tensor 0 ('conv1'): bins 1 outside 2..16777216", [](record& r) { r.bins = 1; });
  add("bins 2^24 + 1", "bins 16777217 outside 2..16777216",
      [](record& r) { r.bins = (1u << 24) + 1; });
  add("bins negative", "bins -1 outside", [](record& r) { r.bins = 0xFFFFFFFFu; });
  add("bins beyond the bytes", "counts: need 134217728 bytes, 16 left",
      [](record& r) { r.bins = 1u << 24; });
  add("lo NaN", "lo nan (0x7fc00000) is not finite", [](record& r) { r.lo = 0x7fc00000u; });
  add("hi inf", "hi inf (0x7f800000) is not finite", [](record& r) { r.hi = 0x7f800000u; });
  add("hi <= lo", "hi 0 (0x00000000) is not greater than lo 0", [](record& r) { r.hi = 0; });
  add("abs lo", "lo -1 (0xbf800000) is not 0 (abs layout)", [](record& r) { r.lo = 0xbf800000u; });
  add("fixed exponent", "exponent 3 is not -64", [](record& r) { r.exponent = 3; });
  add("fixed before range", "range_done is 0", [](record& r) { r.range_done = 0; });
  add("two_pass signed lo", "lo -0.5 (0xbf000000) is not -hi", [](record& r) {
    r.policy = 1;
    r.kind = 1;
    r.lo = 0xbf000000u;  // -0.5 with hi 1
  });
  add("two_pass placeholder", "before the range pass is not the placeholder 2^-64", [](record& r) {
    r.policy = 1;
    r.range_done = 0;  // hi stays 1
  });
  add("two_pass counts before range", "counts[1] = 9 before the range pass (must be 0)",
      [](record& r) {
        r.policy = 1;
        r.range_done = 0;
        r.hi = 0x1f800000u;  // 2^-64
        r.counts = {0, 9};
      });
  add("streaming signed", "a streaming state uses the abs layout", [](record& r) {
    r.policy = 2;
    r.kind = 1;
    r.lo = 0xbf800000u;
    r.exponent = 0;
  });
  add("streaming bins", "bins 6 is not a power of two (streaming)", [](record& r) {
    r.policy = 2;
    r.exponent = 0;
    r.bins = 6;
    r.counts.assign(6, 0);
  });
  add("streaming exponent high", "exponent 128 outside -64..127", [](record& r) {
    r.policy = 2;
    r.exponent = 128;
  });
  add("streaming exponent low", "exponent -65 outside -64..127", [](record& r) {
    r.policy = 2;
    r.exponent = static_cast<std::uint32_t>(-65);
  });
  add("streaming hi", "hi 1 (0x3f800000) is not 2^exponent = 2^1", [](record& r) {
    r.policy = 2;
    r.exponent = 1;
  });
  add("stats NaN", "stats.min is NaN", [](record& r) { r.min = 0x7fc00001u; });
  add("stats max_abs NaN", "stats.max_abs is NaN", [](record& r) { r.max_abs = 0xffc00000u; });
  add("stats negative", "stats.max_abs -1 (0xbf800000) is negative", [](record& r) {
    r.finite = 1;
    r.max_abs = 0xbf800000u;
  });
  add("stats empty min", "stats.min 0 (0x00000000) with finite_count 0 (must be +inf)",
      [](record& r) { r.min = 0; });
  return v;
}

TEST(StateFile, BadFieldsAreRejectedWithTheirName) {
  for (const auto& c : bad_records()) {
    SCOPED_TRACE(c.what);
    const std::string msg = error_of([&] { decode(make_file({c.r}), "bad.klst"); });
    EXPECT_EQ(msg.rfind("bad.klst: ", 0), 0u) << msg;
    EXPECT_TRUE(has(msg, c.message));
  }
}

TEST(StateFile, ValidHandMadeRecordsAreAccepted) {
  // The neighbours of the bad cases above, so that each rejection is about the one field.
  std::vector<record> ok(6);
  ok[1].policy = 2;  // streaming, 2^-64
  ok[1].exponent = static_cast<std::uint32_t>(-64);
  ok[1].hi = 0x1f800000u;
  ok[2].policy = 2;  // streaming, 2^127 (2^24 bins pass the bins check: "bins beyond the bytes")
  ok[2].exponent = 127;
  ok[2].hi = 0x7f000000u;
  ok[2].bins = 4;
  ok[2].counts.assign(4, 7);
  ok[3].policy = 1;  // two_pass before its range, signed
  ok[3].kind = 1;
  ok[3].range_done = 0;
  ok[3].hi = 0x1f800000u;
  ok[3].lo = 0x9f800000u;
  ok[4].kind = 1;  // fixed signed [-1, 1)
  ok[4].lo = 0xbf800000u;
  ok[5].name = "\xff\x01 any bytes but NUL";
  for (std::size_t i = 0; i < ok.size(); ++i) ok[i].name += std::to_string(i);
  ok[0].name.assign(4096, 'n');  // the longest name
  auto v = decode(make_file(ok));
  ASSERT_EQ(v.size(), ok.size());
  EXPECT_EQ(v[0].name.size(), 4096u);
  EXPECT_EQ(v[2].state.counts, (std::vector<std::uint64_t>{7, 7, 7, 7}));
  EXPECT_EQ(v[3].state.range_done, false);
  EXPECT_EQ(v[5].name, "\xff\x01 any bytes but NUL5");
}

TEST(StateFile, DuplicateNamesAreRejected) {
  record a, b, c;
  a.name = "x";
  b.name = "y";
  c.name = "x";
  EXPECT_TRUE(has(decode_error(make_file({a, b, c})), "tensors 0 and 2 are both named 'x'"));
}

TEST(StateFile, HostileNamesAreEscapedInMessages) {
  record r;
  r.name = "a\x1b[2Jb";
  r.policy = 9;
  EXPECT_TRUE(has(decode_error(make_file({r})), "tensor 0 ('a\\x1b[2Jb'): policy 9"));
}

// ---- writer ---------------------------------------------------------------------------------

TEST(StateFile, WriterRejectsWhatTheReaderWould) {
  auto bad = [](auto edit) {
    std::vector<named_state> v = {tiny_state()};
    edit(v);
    return error_of([&] { kf::encode_states(v, "out.klst"); }, errc::invalid_option);
  };
  EXPECT_TRUE(
      has(bad([](auto& v) { v[0].name.clear(); }), "out.klst: tensor 0 (''): name length 0"));
  EXPECT_TRUE(has(bad([](auto& v) { v[0].name = std::string("a\0", 2); }), "NUL byte at offset 1"));
  EXPECT_TRUE(has(bad([](auto& v) { v[0].state.counts.push_back(0); }),
                  "tensor 0 ('ab'): counts has 3 entries, bins is 2"));
  EXPECT_TRUE(has(bad([](auto& v) { v.push_back(v[0]); }), "tensors 0 and 1 are both named 'ab'"));
  EXPECT_TRUE(has(bad([](auto& v) { v[0].state.policy = static_cast<range_policy>(7); }),
                  "policy 7 is not"));
  EXPECT_TRUE(has(bad([](auto& v) {
                    v[0].state.policy = range_policy::streaming;
                    v[0].state.exponent = 1;
                  }),
                  "hi 1 (0x3f800000) is not 2^exponent = 2^1"));
  EXPECT_TRUE(has(bad([](auto& v) { v[0].state.stats.max = std::nanf(""); }), "stats.max is NaN"));
}

TEST(StateFile, InvalidStatesAreNotWritten) {
  temp_dir dir;
  const std::string path = dir.path() + "/keep.klst";
  kf::write_state_file(path, {tiny_state()});
  auto v = sample_states();
  v[3].state.counts[5] = 1;  // two_pass before its range with a count
  error_of([&] { kf::write_state_file(path, v); }, errc::invalid_option);
  EXPECT_EQ(slurp(path), tiny_bytes());
  EXPECT_EQ(dir.list(), std::set<std::string>{"keep.klst"});
}

TEST(StateFile, UnwritableTargetIsAnIoErrorAndLeavesNoTemporary) {
  temp_dir dir;
  // The target is a directory: the temporary is written and synced, the rename fails.
  const std::string sub = dir.path() + "/sub";
  ASSERT_EQ(::mkdir(sub.c_str(), 0777), 0);
  std::string msg = error_of([&] { kf::write_state_file(sub, sample_states()); }, errc::io_error);
  EXPECT_TRUE(has(msg, sub + ": cannot rename the temporary file over it"));
  EXPECT_EQ(dir.list(), std::set<std::string>{"sub"});
  // The directory does not exist: nothing can be created.
  const std::string missing = dir.path() + "/no/such/dir/x.klst";
  msg = error_of([&] { kf::write_state_file(missing, {tiny_state()}); }, errc::io_error);
  EXPECT_TRUE(
      has(msg, missing + ": cannot create a temporary file in " + dir.path() + "/no/such/dir"));
  EXPECT_EQ(dir.list(), std::set<std::string>{"sub"});
}

TEST(StateFile, ReadErrors) {
  temp_dir dir;
  EXPECT_TRUE(has(error_of([&] { kf::read_state_file(dir.path() + "/none.klst"); }, errc::io_error),
                  "none.klst: cannot open"));
  EXPECT_TRUE(
      has(error_of([&] { kf::read_state_file(dir.path()); }, errc::io_error), "is a directory"));
  const std::string path = dir.path() + "/short.klst";
  kf::write_file(path, tiny_bytes().substr(0, 50));
  EXPECT_TRUE(has(error_of([&] { kf::read_state_file(path); }),
                  path + ": truncated: 1 tensors need at least 76 bytes, 26 left"));
}

TEST(WriteFileAtomic, WritesExactBytesWithNoTemporaryLeft) {
  temp_dir dir;
  const std::string path = dir.path() + "/out.bin";
  const std::string big(3 << 20, '\x5a');
  kf::write_file_atomic(path, big);
  EXPECT_EQ(slurp(path), big);
  kf::write_file_atomic(path, "");
  EXPECT_EQ(slurp(path), "");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0);
  EXPECT_EQ(dir.list(), std::set<std::string>{"out.bin"});
}

TEST(StagedFile, NothingChangesUntilCommitAndAnUncommittedOneLeavesNoTemporary) {
  temp_dir dir;
  const std::string a = dir.path() + "/a.txt", b = dir.path() + "/b.txt";
  kf::write_file(a, "old a");
  {
    kf::staged_file sa(a, "new a");
    kf::staged_file sb(b, "new b");
    EXPECT_EQ(slurp(a), "old a");  // staged: written and synced beside the target only
    EXPECT_EQ(dir.list().size(), 3u);
    sa.commit();
    EXPECT_EQ(slurp(a), "new a");
  }  // sb is destroyed uncommitted
  EXPECT_EQ(dir.list(), std::set<std::string>{"a.txt"});
  kf::staged_file moved = kf::staged_file(b, "b");
  moved.commit();
  EXPECT_EQ(slurp(b), "b");
  EXPECT_TRUE(has(error_of([&] { moved.commit(); }, errc::io_error), "committed twice"));
  EXPECT_EQ(dir.list(), (std::set<std::string>{"a.txt", "b.txt"}));
}

TEST(OpenFile, RefusesNonRegularFilesWithoutReading) {
  temp_dir dir;
  // A FIFO without a writer: opening it for reading would block forever.
  const std::string fifo = dir.path() + "/p.npy";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0666), 0);
  EXPECT_TRUE(has(error_of([&] { kf::open_file(fifo); }, errc::io_error),
                  fifo + ": is a FIFO (named pipe), expected a regular file"));
  EXPECT_TRUE(has(error_of([&] { kf::open_npy("/dev/zero"); }, errc::io_error),
                  "/dev/zero: is a character device"));
}

}  // namespace
