// Tests of the file formats: .npy/.npz readers and writers, TensorRT cache, JSON.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <string>
#include <vector>

#include "klcal/formats.hpp"

namespace kf = klcal::formats;

namespace {

// Builds a .npy by hand (independent of npy_bytes) with the given version and dict text.
std::string make_npy(int major, const std::string& dict, const std::string& data) {
  std::string h = dict;
  std::size_t pre = major == 1 ? 10 : 12;
  while ((pre + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  out += static_cast<char>(h.size() & 0xff);
  out += static_cast<char>((h.size() >> 8) & 0xff);
  if (major != 1) {
    out += static_cast<char>((h.size() >> 16) & 0xff);
    out += static_cast<char>((h.size() >> 24) & 0xff);
  }
  return out + h + data;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// The fp32 bit pattern, for exact scale comparisons (+0 != -0).
std::uint32_t fp32_bits(float f) {
  std::uint32_t b = 0;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// memory_source does not own its bytes: keep every test buffer alive until the process ends.
kf::npy_reader reader_of(const std::string& tmp, std::size_t chunk = 1 << 20) {
  static std::deque<std::string> keep;
  const std::string& bytes = keep.emplace_back(tmp);
  auto src = kf::memory_source(bytes.data(), bytes.size(), "mem.npy");
  return kf::npy_reader(kf::range_stream(src, 0, bytes.size()), "mem.npy",
                        static_cast<std::int64_t>(bytes.size()), chunk);
}

// Runs f and returns the error message; fails the test when nothing is thrown.
template <class F>
std::string error_of(F&& f, klcal::errc expect = klcal::errc::format_error) {
  try {
    f();
  } catch (const klcal::error& e) {
    EXPECT_EQ(e.code().code, expect) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no klcal::error thrown";
  return {};
}

const std::vector<float> k_vals = {1.5f, -2.25f, 0.0f, 3.0e-3f, -1e30f, 7.0f};

}  // namespace

TEST(NpyRead, VersionsOneTwoThree) {
  for (int major : {1, 2, 3}) {
    std::string b =
        make_npy(major, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", raw(k_vals));
    auto r = reader_of(b);
    EXPECT_EQ(r.header().version_major, major);
    EXPECT_EQ(r.header().count, 6);
    ASSERT_EQ(r.header().shape, (std::vector<std::int64_t>{2, 3}));
    EXPECT_EQ(kf::read_all_f32(r), k_vals);
  }
}

TEST(NpyRead, HalfDeliveredAsF16Bits) {
  // 1.0, -2.0, smallest subnormal 2^-24, +inf
  std::vector<std::uint16_t> h = {0x3c00, 0xc000, 0x0001, 0x7c00};
  auto r =
      reader_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", raw(h)));
  kf::chunk c;
  ASSERT_TRUE(r.next(c));
  EXPECT_EQ(c.type, klcal::dtype::f16);
  ASSERT_EQ(c.n, 4);
  EXPECT_EQ(std::memcmp(c.data, h.data(), 8), 0);
  EXPECT_FALSE(r.next(c));
  auto r2 =
      reader_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", raw(h)));
  auto f = kf::read_all_f32(r2);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  EXPECT_EQ(f[2], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(f[3]));
}

TEST(NpyRead, Void2IsBf16OnlyWhenAskedFor) {
  // 1.0, -2.0, the smallest bf16 subnormal 2^-133, NaN
  const std::vector<std::uint16_t> h = {0x3f80, 0xc000, 0x0001, 0x7fc0};
  for (const char* descr : {"<V2", "|V2"}) {
    static std::deque<std::string> keep;
    const std::string& b = keep.emplace_back(make_npy(
        1, std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (4,), }",
        raw(h)));
    auto src = kf::memory_source(b.data(), b.size(), "bf.npy");
    EXPECT_NE(error_of([&] {
                kf::npy_reader(kf::range_stream(src, 0, b.size()), "bf.npy");
              }).find("bf.npy: 2-byte void dtype '" + std::string(descr) + "'"),
              std::string::npos);
    kf::npy_reader r(kf::range_stream(src, 0, b.size()), "bf.npy",
                     static_cast<std::int64_t>(b.size()), 1 << 20, kf::npy_void2::bf16);
    EXPECT_EQ(r.header().delivered(), klcal::dtype::bf16);
    EXPECT_EQ(r.header().itemsize(), 2u);
    auto f = kf::read_all_f32(r);
    ASSERT_EQ(f.size(), 4u);
    EXPECT_EQ(f[0], 1.0f);
    EXPECT_EQ(f[1], -2.0f);
    EXPECT_EQ(f[2], std::ldexp(1.0f, -133));
    EXPECT_TRUE(std::isnan(f[3]));
  }
  // npy_bytes writes bf16 with the '<V2' descr, and it reads back as the same bits.
  const std::string w = kf::npy_bytes(h.data(), kf::npy_dtype::bf16, {2, 2});
  EXPECT_NE(w.find("'<V2'"), std::string::npos);
  auto src = kf::memory_source(w.data(), w.size(), "w.npy");
  kf::npy_reader r(kf::range_stream(src, 0, w.size()), "w.npy", static_cast<std::int64_t>(w.size()),
                   1 << 20, kf::npy_void2::bf16);
  kf::chunk c;
  ASSERT_TRUE(r.next(c));
  ASSERT_EQ(c.n, 4);
  EXPECT_EQ(std::memcmp(c.data, h.data(), 8), 0);
}

TEST(NpyRead, DoubleRoundsToNearestEven) {
  // 1 + 2^-24 is halfway between 1 and 1 + 2^-23: ties to even -> 1.
  // 1 + 3*2^-25 is above halfway -> 1 + 2^-23. 1e300 overflows to +inf.
  std::vector<double> d = {1.0 + std::ldexp(1.0, -24), 1.0 + 3 * std::ldexp(1.0, -25), 1e300, -0.1};
  auto r =
      reader_of(make_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", raw(d)));
  auto f = kf::read_all_f32(r);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], 1.0f + std::ldexp(1.0f, -23));
  EXPECT_TRUE(std::isinf(f[2]));
  EXPECT_EQ(f[3], -0.1f);
}

TEST(NpyRead, FortranOneDimAndScalar) {
  auto r = reader_of(
      make_npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 6, 1), }", raw(k_vals)));
  EXPECT_EQ(kf::read_all_f32(r), k_vals);
  std::vector<float> one = {4.0f};
  auto s =
      reader_of(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", raw(one)));
  EXPECT_EQ(s.header().count, 1);
  EXPECT_EQ(kf::read_all_f32(s), one);
  auto z =
      reader_of(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", ""));
  EXPECT_EQ(z.header().count, 0);
  EXPECT_TRUE(kf::read_all_f32(z).empty());
}

TEST(NpyRead, ChunksAreBounded) {
  std::vector<float> v(1000);
  for (int i = 0; i < 1000; ++i) v[i] = static_cast<float>(i);
  auto r =
      reader_of(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", raw(v)),
                256);  // 64 elements per chunk
  kf::chunk c;
  std::vector<float> all;
  int chunks = 0;
  while (r.next(c)) {
    EXPECT_LE(c.n, 64);
    const float* p = static_cast<const float*>(c.data);
    all.insert(all.end(), p, p + c.n);
    ++chunks;
  }
  EXPECT_EQ(chunks, 16);
  ASSERT_EQ(all.size(), v.size());
  for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(all[i], v[i]) << i;
}

TEST(NpyRead, WriterRoundTrip) {
  std::string b = kf::npy_bytes(k_vals.data(), kf::npy_dtype::f4, {3, 2});
  EXPECT_EQ(b.size() % 64, k_vals.size() * 4 % 64);  // header padded to 64 bytes
  auto r = reader_of(b);
  EXPECT_EQ(r.header().shape, (std::vector<std::int64_t>{3, 2}));
  EXPECT_EQ(kf::read_all_f32(r), k_vals);
  EXPECT_NE(b.find("'shape': (3, 2)"), std::string::npos);
  std::string one = kf::npy_bytes(k_vals.data(), kf::npy_dtype::f4, {6});
  EXPECT_NE(one.find("'shape': (6,)"), std::string::npos);
}

TEST(NpyErrors, EachHasAPreciseMessage) {
  const std::string d6 = raw(k_vals);
  struct bad_case {
    std::string bytes;
    std::string needle;
  };
  auto hdr = [&](const std::string& dict, const std::string& data) {
    return make_npy(1, dict, data);
  };
  std::vector<bad_case> cases = {
      {"hello world", "missing the \\x93NUMPY magic"},
      {"\x93NUMPY", "truncated .npy header (no version)"},
      {std::string("\x93NUMPY\x04\x00", 8) + "xx", "unsupported .npy format version 4.0"},
      {std::string("\x93NUMPY\x01\x00\xff\x00", 10) + "{'descr'", "truncated .npy header"},
      {hdr("{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", d6),
       "big-endian dtype '>f4'"},
      {hdr("{'descr': '|O', 'fortran_order': False, 'shape': (6,), }", d6),
       "unsupported dtype '|O'"},
      {hdr("{'descr': '<i4', 'fortran_order': False, 'shape': (6,), }", d6),
       "unsupported dtype '<i4'"},
      {hdr("{'descr': '|u1', 'fortran_order': False, 'shape': (6,), }", d6),
       "unsupported dtype '|u1'"},
      {hdr("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", d6),
       "structured or object arrays"},
      {hdr("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", d6), "Fortran-order"},
      {hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }", d6),
       "shape/size mismatch: shape (7,) needs 156 bytes but the data has 152 (truncated)"},
      {hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", d6),
       "shape/size mismatch: shape (5,) needs 148 bytes but the data has 152"},
      {hdr("{'descr': '<f4', 'fortran_order': False }", d6), "missing key 'shape'"},
      {hdr("{'descr': '<f4', 'fortran_order': 0, 'shape': (6,), }", d6), "'fortran_order' is not"},
      {hdr("{'descr': '<f4', 'fortran_order': False, 'shape': 6, }", d6), "'shape' is not a tuple"},
      {hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", d6),
       "unexpected key 'x'"},
      {hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (6,)", d6), "malformed .npy header"},
      {hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", d6),
       "integer too large"},
      {hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", d6),
       "overflows"},
  };
  for (const auto& c : cases) {
    std::string msg = error_of([&] {
      auto r = reader_of(c.bytes);
      kf::read_all_f32(r);
    });
    EXPECT_NE(msg.find("mem.npy: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.needle), std::string::npos)
        << "message: " << msg << "\nwanted: " << c.needle;
  }
}

TEST(NpyErrors, TruncatedStreamWithoutKnownSize) {
  std::string b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
                           raw(k_vals).substr(0, 10));
  auto src = kf::memory_source(b.data(), b.size(), "t.npy");
  kf::npy_reader r(kf::range_stream(src, 0, b.size()), "t.npy");  // no size check up front
  std::string msg = error_of([&] { kf::read_all_f32(r); });
  EXPECT_NE(msg.find("t.npy: truncated data: expected 24 bytes of elements, got 10"),
            std::string::npos)
      << msg;
  std::string t =
      make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", raw(k_vals));
  auto src2 = kf::memory_source(t.data(), t.size(), "t.npy");
  kf::npy_reader r2(kf::range_stream(src2, 0, t.size()), "t.npy");
  msg = error_of([&] { kf::read_all_f32(r2); });
  EXPECT_NE(msg.find("trailing bytes"), std::string::npos) << msg;
}

TEST(NpyErrors, MissingFileAndDirectory) {
  std::string msg = error_of([] { kf::open_npy("/nonexistent/x.npy"); }, klcal::errc::io_error);
  EXPECT_NE(msg.find("/nonexistent/x.npy: cannot open"), std::string::npos) << msg;
  msg = error_of([] { kf::open_npy("/tmp"); }, klcal::errc::io_error);
  EXPECT_NE(msg.find("/tmp: is a directory"), std::string::npos) << msg;
}

TEST(Npz, StoredAndDeflateMembers) {
  std::vector<float> big(100000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = std::sin(0.001f * float(i));
  std::vector<std::uint16_t> h = {0x3c00, 0x4000};
  for (bool deflate : {false, true}) {
    std::string z =
        kf::npz_bytes({{"conv1.npy", kf::npy_bytes(big.data(), kf::npy_dtype::f4, {100000})},
                       {"layer:0 out.npy", kf::npy_bytes(h.data(), kf::npy_dtype::f2, {2})}},
                      deflate);
    kf::npz_archive a(kf::memory_source(z.data(), z.size(), "a.npz"));
    ASSERT_EQ(a.members().size(), 2u);
    EXPECT_EQ(a.members()[0].method, deflate ? 8 : 0);
    EXPECT_EQ(kf::npz_archive::tensor_name(a.members()[0]), "conv1");
    EXPECT_EQ(kf::npz_archive::tensor_name(a.members()[1]), "layer:0 out");
    auto r = a.open_npy(a.members()[0], 4096);  // many chunks, many inflate calls
    EXPECT_EQ(r.name(), "a.npz:conv1.npy");
    EXPECT_EQ(kf::read_all_f32(r), big);
    auto r2 = a.open_npy(a.members()[1]);
    EXPECT_EQ(kf::read_all_f32(r2), (std::vector<float>{1.0f, 2.0f}));
  }
}

TEST(Npz, Errors) {
  std::vector<float> v = {1, 2, 3};
  std::string good =
      kf::npz_bytes({{"x.npy", kf::npy_bytes(v.data(), kf::npy_dtype::f4, {3})}}, true);
  // Not a zip.
  std::string msg = error_of([] {
    std::string s(100, 'a');
    kf::npz_archive a(kf::memory_source(s.data(), s.size(), "b.npz"));
  });
  EXPECT_NE(msg.find("b.npz: not a zip archive"), std::string::npos) << msg;
  // Unsupported compression method (patch both headers: method 12 = bzip2).
  std::string m = good;
  m[8] = 12;
  std::size_t cd = m.find("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  m[cd + 10] = 12;
  msg = error_of([&] {
    kf::npz_archive a(kf::memory_source(m.data(), m.size(), "c.npz"));
    a.open(a.members()[0]);
  });
  EXPECT_NE(msg.find("c.npz:x.npy: compression method 12 is not supported"), std::string::npos)
      << msg;
  // Corrupt deflate data -> CRC or zlib error, never a crash.
  std::string c = good;
  for (std::size_t i = 40; i < 60 && i < cd; ++i) c[i] = static_cast<char>(c[i] ^ 0x5a);
  msg = error_of([&] {
    kf::npz_archive a(kf::memory_source(c.data(), c.size(), "d.npz"));
    auto r = a.open_npy(a.members()[0]);
    kf::read_all_f32(r);
  });
  EXPECT_NE(msg.find("d.npz:x.npy: "), std::string::npos) << msg;
  // Truncated archive: the central directory is gone.
  std::string t = good.substr(0, good.size() - 30);
  msg = error_of([&] { kf::npz_archive a(kf::memory_source(t.data(), t.size(), "e.npz")); });
  EXPECT_NE(msg.find("e.npz: "), std::string::npos) << msg;
}

TEST(Cache, ScaleHex) {
  EXPECT_EQ(kf::scale_hex(1.0f / 127.0f), "3c010204");
  EXPECT_EQ(kf::scale_hex(0.0f), "0");
  EXPECT_EQ(kf::scale_hex(1.0f), "3f800000");
  EXPECT_EQ(kf::scale_hex(std::numeric_limits<float>::denorm_min()), "1");
}

TEST(Cache, RoundTripWithAwkwardNames) {
  kf::calibration_cache c;
  c.entries = {{"input", 1.0f / 127.0f},
               {"layer1/conv: out", 0.5f},
               {"a: b: c", 3.0e-5f},
               {"name with spaces [0]", 0.0f}};
  std::string text = kf::format_cache(c);
  EXPECT_EQ(text,
            "TRT-8601-EntropyCalibration2\ninput: 3c010204\nlayer1/conv: out: 3f000000\n"
            "a: b: c: 37fba882\nname with spaces [0]: 0\n");
  auto back = kf::parse_cache(text, "c.cache");
  EXPECT_EQ(back.version, "8601");
  EXPECT_EQ(back.algorithm, "EntropyCalibration2");
  ASSERT_EQ(back.entries.size(), c.entries.size());
  for (std::size_t i = 0; i < c.entries.size(); ++i) {
    EXPECT_EQ(back.entries[i].name, c.entries[i].name);
    EXPECT_EQ(fp32_bits(back.entries[i].scale), fp32_bits(c.entries[i].scale));
  }
}

TEST(Cache, LenientReader) {
  auto c = kf::parse_cache("TRT-100900-MinMaxCalibration\r\n\r\nx: 3C010204\r\ny:z: 0\n", "c");
  EXPECT_EQ(c.version, "100900");
  EXPECT_EQ(c.algorithm, "MinMaxCalibration");
  ASSERT_EQ(c.entries.size(), 2u);
  EXPECT_EQ(c.entries[0].scale, 1.0f / 127.0f);
  EXPECT_EQ(c.entries[1].name, "y:z");
  EXPECT_EQ(c.entries[1].scale, 0.0f);
  EXPECT_NE(error_of([] { kf::parse_cache("", "e.cache"); }).find("e.cache: empty"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              kf::parse_cache("TRT-x-Entropy\n", "e.cache");
            }).find("e.cache:1: expected a header"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              kf::parse_cache("TRT-8601-E\nnoseparator\n", "e.cache");
            }).find("e.cache:2: expected '<name>: <hex>'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              kf::parse_cache("TRT-8601-E\nx: 123456789\n", "e.cache");
            }).find("not an fp32 bit pattern"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              kf::parse_cache("TRT-8601-E\nx: 0xzz\n", "e.cache");
            }).find("not an fp32 bit pattern"),
            std::string::npos);
}

TEST(Json, WriterEscapesAndNumbers) {
  EXPECT_EQ(kf::json_string("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(kf::json_number(0.1), "0.10000000000000001");
  EXPECT_EQ(kf::json_number(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(kf::json_number(std::nan("")), "null");
  EXPECT_EQ(kf::json_number(3.0), "3");
}

TEST(Json, ReaderRoundTrip) {
  std::string name = "we\"ird\\ name\t\x01";
  std::string text =
      "{\"k\": " + kf::json_string(name) + ", \"x\": " + kf::json_number(0.1) +
      ", \"a\": [1, -2.5e-3, true, false, null, {}], \"u\": \"\\u00e9\\ud83d\\ude00\"}";
  auto v = kf::parse_json(text, "j.json");
  ASSERT_EQ(v.type, kf::json_value::kind::object);
  EXPECT_EQ(v.find("k")->str, name);
  EXPECT_EQ(v.find("x")->num, 0.1);
  ASSERT_EQ(v.find("a")->arr.size(), 6u);
  EXPECT_EQ(v.find("a")->arr[1].num, -2.5e-3);
  EXPECT_TRUE(v.find("a")->arr[2].b);
  EXPECT_EQ(v.find("a")->arr[4].type, kf::json_value::kind::null);
  EXPECT_EQ(v.find("u")->str, "\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v.find("missing"), nullptr);
  for (const char* bad :
       {"", "{", "{\"a\" 1}", "[1,]", "01", "\"abc", "[1] x", "{\"a\":tru}", "-"}) {
    std::string msg = error_of([&] { kf::parse_json(bad, "bad.json"); });
    EXPECT_NE(msg.find("bad.json: invalid JSON at byte"), std::string::npos)
        << bad << " -> " << msg;
  }
  std::string deep(300, '[');
  EXPECT_NE(error_of([&] { kf::parse_json(deep, "d.json"); }).find("nesting"), std::string::npos);
}
