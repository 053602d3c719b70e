// Header-only reader of tests/data/*.golden (docs/testing.md) and the documented tolerances.
//
// Usage (any test executable; the default KLCAL_TEST_DATA_DIR is defined by tests/CMakeLists.txt,
// the environment variable of the same name overrides it at run time, see data_dir()):
//
//   for (const auto& path : klcal::test::golden_files(klcal::test::data_dir())) {
//     std::vector<klcal::test::golden_case> cases = klcal::test::load_golden_file(path);  // throws
//     for (const auto& gc : cases) {
//       for (std::size_t b = 0; b < gc.batches.size(); ++b) {
//         std::vector<unsigned char> bytes = gc.batch_bytes(b);  // host data of gc.type
//         ... add(bytes.data(), gc.type, gc.batch_size(b)) ...
//       }
//       for (const auto& gs : gc.searches) {
//         klcal::search_options o = gs.opts;   // defaults filled in, ready to use
//         ... compare with gs.index, gs.amax, ..., or gs.error ...
//       }
//     }
//   }
//
// Parse errors throw std::runtime_error("<file>:<line>: <what>"). Nothing here calls klcal code
// (not even to_string): the goldens check that code.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "klcal/status.hpp"
#include "klcal/types.hpp"

namespace klcal::test {

/// The folder of the *.golden files: the environment variable KLCAL_TEST_DATA_DIR when it is set
/// and not empty (prebuilt programs copied to another machine, scripts/gpu-pack.sh), otherwise
/// the source tree's tests/data, compiled in as the macro KLCAL_TEST_DATA_DIR.
inline std::string data_dir() {
  const char* e = std::getenv("KLCAL_TEST_DATA_DIR");
  if (e != nullptr && *e != '\0') return e;
#ifdef KLCAL_TEST_DATA_DIR
  return KLCAL_TEST_DATA_DIR;
#else
  return "tests/data";
#endif
}

/// docs/testing.md: reference (C++) vs goldens (NumPy), per curve entry / score / clipped.
inline constexpr double golden_abs_tol = 1e-12;
inline constexpr double golden_rel_tol = 1e-10;
/// docs/testing.md: fast paths (CPU backend, GPU; prefix-sum form) vs the reference.
inline constexpr double fast_abs_tol = 1e-9;
inline constexpr double fast_rel_tol = 1e-9;

/// How the histogram of a golden case is obtained.
enum class golden_range { fixed, streaming, counts };

/// One `search` block of a golden case.
struct golden_search {
  search_options opts{};      ///< method, rules and every option line; omitted = default
  std::optional<errc> error;  ///< set: the search must fail with this code (no expectations)
  std::int32_t index = 0;
  double amax = 0.0;
  float scale = 0.0f;
  double score = 0.0;
  double clipped = 0.0;
  bool degenerate = false;
  bool has_curve = false;     ///< a `curve` line was present (omitted for max, percentile)
  std::vector<double> curve;  ///< +inf entries as written
  int line = 0;               ///< line of the `search` record, for messages
};

/// One `case ... end` record.
struct golden_case {
  std::string file;  ///< path it was read from
  std::string name;  ///< unique, [a-z0-9_]
  std::string description;
  dtype type = dtype::f32;
  golden_range range = golden_range::fixed;
  histogram_spec spec{};  ///< layout, bins, lo, hi (streaming: the expected final range)
  /// Raw element bit patterns per batch, in file order (f16/bf16 patterns in the low 16 bits).
  std::vector<std::vector<std::uint32_t>> batches;
  std::vector<std::uint64_t> counts;  ///< dense, spec.bins entries (expected, or input for counts)
  std::uint64_t nan_count = 0;
  std::uint64_t inf_count = 0;
  float max_abs = 0.0f;
  std::optional<errc> error;  ///< set: building this histogram must fail with this code
  std::vector<golden_search> searches;

  /// Number of elements of batch b.
  std::int64_t batch_size(std::size_t b) const {
    return static_cast<std::int64_t>(batches.at(b).size());
  }
  /// Batch b as host memory of `type` (4 bytes per f32 element, 2 per f16/bf16, native order).
  std::vector<unsigned char> batch_bytes(std::size_t b) const {
    const auto& bits = batches.at(b);
    const std::size_t width = type == dtype::f32 ? 4 : 2;
    std::vector<unsigned char> out(bits.size() * width);
    for (std::size_t i = 0; i < bits.size(); ++i) {
      if (width == 4) {
        std::memcpy(out.data() + 4 * i, &bits[i], 4);
      } else {
        const auto h = static_cast<std::uint16_t>(bits[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
    }
    return out;
  }
  /// All batches concatenated, as host memory of `type`.
  std::vector<unsigned char> all_bytes() const {
    std::vector<unsigned char> out;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      auto part = batch_bytes(b);
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }
  /// Total number of elements over all batches.
  std::int64_t total_size() const {
    std::int64_t n = 0;
    for (const auto& b : batches) n += static_cast<std::int64_t>(b.size());
    return n;
  }
};

namespace golden_detail {

inline const std::map<std::string, errc>& errc_names() {
  // The spelled-out names of docs/numerics.md 6 (and status.hpp), independent of to_string().
  static const std::map<std::string, errc> names = {
      {"ok", errc::ok},
      {"too_few_bins", errc::too_few_bins},
      {"too_many_bins", errc::too_many_bins},
      {"start_bin_out_of_range", errc::start_bin_out_of_range},
      {"invalid_stride", errc::invalid_stride},
      {"invalid_bits", errc::invalid_bits},
      {"invalid_range", errc::invalid_range},
      {"bins_not_odd", errc::bins_not_odd},
      {"bins_not_power_of_two", errc::bins_not_power_of_two},
      {"null_pointer", errc::null_pointer},
      {"workspace_too_small", errc::workspace_too_small},
      {"invalid_percentile", errc::invalid_percentile},
      {"layout_mismatch", errc::layout_mismatch},
      {"invalid_dtype", errc::invalid_dtype},
      {"invalid_count", errc::invalid_count},
      {"invalid_option", errc::invalid_option},
      {"cuda_error", errc::cuda_error},
      {"out_of_memory", errc::out_of_memory},
      {"io_error", errc::io_error},
      {"format_error", errc::format_error},
  };
  return names;
}

struct parser {
  std::string file;
  int line = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(file + ":" + std::to_string(line) + ": " + what);
  }

  std::uint64_t hex(const std::string& tok, std::size_t digits) const {
    if (tok.size() != digits) fail("expected " + std::to_string(digits) + " hex digits: " + tok);
    std::uint64_t v = 0;
    for (char ch : tok) {
      int d;
      if (ch >= '0' && ch <= '9')
        d = ch - '0';
      else if (ch >= 'a' && ch <= 'f')
        d = ch - 'a' + 10;
      else
        fail("not a lowercase hex digit in " + tok);
      v = v * 16 + static_cast<std::uint64_t>(d);
    }
    return v;
  }
  float hex32(const std::string& tok) const {
    const auto bits = static_cast<std::uint32_t>(hex(tok, 8));
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  double hex64(const std::string& tok) const {
    const std::uint64_t bits = hex(tok, 16);
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  std::int64_t integer(const std::string& tok) const {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used, 10);
    } catch (const std::exception&) {
      fail("not an integer: " + tok);
    }
    if (used != tok.size()) fail("not an integer: " + tok);
    return v;
  }
  std::int32_t int32(const std::string& tok) const {
    const std::int64_t v = integer(tok);
    if (v < std::numeric_limits<std::int32_t>::min() ||
        v > std::numeric_limits<std::int32_t>::max())
      fail("out of int32 range: " + tok);
    return static_cast<std::int32_t>(v);
  }
  std::uint64_t count(const std::string& tok) const {
    if (tok.empty() || tok.find_first_not_of("0123456789") != std::string::npos)
      fail("not a count: " + tok);
    try {
      return std::stoull(tok);
    } catch (const std::exception&) {
      fail("count out of range: " + tok);
    }
  }
  bool flag(const std::string& tok) const {
    if (tok == "0") return false;
    if (tok == "1") return true;
    fail("expected 0 or 1: " + tok);
  }
  errc error_code(const std::string& tok) const {
    const auto& names = errc_names();
    auto it = names.find(tok);
    if (it == names.end()) fail("unknown errc: " + tok);
    return it->second;
  }
  void arity(const std::vector<std::string>& t, std::size_t n) const {
    if (t.size() != n) fail("record '" + t[0] + "' needs " + std::to_string(n - 1) + " value(s)");
  }
};

inline std::vector<std::string> split_spaces(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string tok; in >> tok;) out.push_back(tok);
  return out;
}

}  // namespace golden_detail

/// Parses golden text (one file's contents). `file` is used in error messages and stored in
/// each case. Throws std::runtime_error on any deviation from the format of docs/testing.md.
/// A search block ends at the next `search`, at `end` or at the end of its case; a case ends at
/// the `end` that follows it outside a search block, at the next `case`, or at end of input
/// (so both readings of `end`, per search and per case, are accepted).
inline std::vector<golden_case> parse_golden(const std::string& text, const std::string& file) {
  golden_detail::parser p{file, 0};
  std::vector<golden_case> cases;
  std::optional<golden_case> cur;
  std::optional<golden_search> srch;
  std::vector<std::pair<std::int64_t, std::uint64_t>> sparse;
  bool have_counts = false, have_bins = false, have_header = false;

  auto close_search = [&]() {
    if (!srch) return;
    cur->searches.push_back(std::move(*srch));
    srch.reset();
  };
  auto close_case = [&]() {
    close_search();
    if (!cur) return;
    if (!have_bins) p.fail("case " + cur->name + " has no bins record");
    if (cur->spec.bins < 1 || cur->spec.bins > max_bins) {
      // Error cases may carry a bad bin count; keep counts empty then.
      if (!sparse.empty()) p.fail("counts given with an unusable bin count");
    } else {
      cur->counts.assign(static_cast<std::size_t>(cur->spec.bins), 0);
      std::int64_t prev = -1;
      for (const auto& [j, c] : sparse) {
        if (j <= prev || j >= cur->spec.bins) p.fail("counts: bin index out of order or range");
        cur->counts[static_cast<std::size_t>(j)] = c;
        prev = j;
      }
    }
    if (!have_counts && !cur->error) p.fail("case " + cur->name + " has no counts record");
    cases.push_back(std::move(*cur));
    cur.reset();
  };

  std::istringstream in(text);
  for (std::string raw; std::getline(in, raw);) {
    ++p.line;
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    const std::size_t first = raw.find_first_not_of(' ');
    if (first == std::string::npos || raw[first] == '#') continue;
    const auto t = golden_detail::split_spaces(raw);
    const std::string& key = t[0];
    if (!have_header) {
      if (!(t.size() == 2 && key == "klcal-golden" && t[1] == "1"))
        p.fail("first record must be 'klcal-golden 1'");
      have_header = true;
      continue;
    }
    if (key == "case") {
      close_case();
      p.arity(t, 2);
      if (t[1].find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
        p.fail("case name must be [a-z0-9_]: " + t[1]);
      cur.emplace();
      cur->file = file;
      cur->name = t[1];
      sparse.clear();
      have_counts = have_bins = false;
      continue;
    }
    if (!cur) p.fail("record '" + key + "' outside a case");
    if (key == "end") {
      p.arity(t, 1);
      if (srch)
        close_search();
      else
        close_case();
      continue;
    }
    if (key == "search") {
      close_search();
      p.arity(t, 3);
      srch.emplace();
      srch->line = p.line;
      const std::string& m = t[1];
      if (m == "entropy")
        srch->opts.meth = method::entropy;
      else if (m == "max")
        srch->opts.meth = method::max;
      else if (m == "percentile")
        srch->opts.meth = method::percentile;
      else if (m == "mse")
        srch->opts.meth = method::mse;
      else
        p.fail("unknown method: " + m);
      if (t[2] == "tensorrt")
        srch->opts.rules = rule_set::tensorrt;
      else if (t[2] == "mxnet")
        srch->opts.rules = rule_set::mxnet;
      else
        p.fail("unknown rule set: " + t[2]);
      continue;
    }
    if (srch) {  // records of a search block
      golden_search& s = *srch;
      if (key == "start_bin") {
        p.arity(t, 2);
        s.opts.start_bin = p.int32(t[1]);
      } else if (key == "stride") {
        p.arity(t, 2);
        s.opts.stride = p.int32(t[1]);
      } else if (key == "bits") {
        p.arity(t, 2);
        s.opts.bits = p.int32(t[1]);
      } else if (key == "unsigned") {
        p.arity(t, 2);
        s.opts.is_unsigned = p.flag(t[1]);
      } else if (key == "zero_bin") {
        p.arity(t, 2);
        if (t[1] == "copy_next")
          s.opts.zero_bin = zero_bin_policy::copy_next;
        else if (t[1] == "keep")
          s.opts.zero_bin = zero_bin_policy::keep;
        else
          p.fail("unknown zero_bin: " + t[1]);
      } else if (key == "percentile") {
        p.arity(t, 2);
        s.opts.percentile = p.hex64(t[1]);
      } else if (key == "error") {
        p.arity(t, 2);
        s.error = p.error_code(t[1]);
      } else if (key == "index") {
        p.arity(t, 2);
        s.index = p.int32(t[1]);
      } else if (key == "amax") {
        p.arity(t, 2);
        s.amax = p.hex64(t[1]);
      } else if (key == "scale") {
        p.arity(t, 2);
        s.scale = p.hex32(t[1]);
      } else if (key == "score") {
        p.arity(t, 2);
        s.score = p.hex64(t[1]);
      } else if (key == "clipped") {
        p.arity(t, 2);
        s.clipped = p.hex64(t[1]);
      } else if (key == "degenerate") {
        p.arity(t, 2);
        s.degenerate = p.flag(t[1]);
      } else if (key == "curve") {
        if (t.size() < 2) p.fail("curve needs a length");
        const std::uint64_t n = p.count(t[1]);
        if (t.size() != n + 2) p.fail("curve length does not match its values");
        s.has_curve = true;
        s.curve.clear();
        for (std::size_t k = 2; k < t.size(); ++k) s.curve.push_back(p.hex64(t[k]));
      } else {
        p.fail("unknown record in a search block: " + key);
      }
      continue;
    }
    golden_case& c = *cur;  // records of the case itself
    if (key == "description") {
      c.description = raw.size() > first + 12 ? raw.substr(first + 12) : std::string();
    } else if (key == "dtype") {
      p.arity(t, 2);
      if (t[1] == "f32")
        c.type = dtype::f32;
      else if (t[1] == "f16")
        c.type = dtype::f16;
      else if (t[1] == "bf16")
        c.type = dtype::bf16;
      else
        p.fail("unknown dtype: " + t[1]);
    } else if (key == "layout") {
      p.arity(t, 2);
      if (t[1] == "abs")
        c.spec.kind = layout::abs;
      else if (t[1] == "signed")
        c.spec.kind = layout::signed_;
      else
        p.fail("unknown layout: " + t[1]);
    } else if (key == "range") {
      p.arity(t, 2);
      if (t[1] == "fixed")
        c.range = golden_range::fixed;
      else if (t[1] == "streaming")
        c.range = golden_range::streaming;
      else if (t[1] == "counts")
        c.range = golden_range::counts;
      else
        p.fail("unknown range policy: " + t[1]);
    } else if (key == "bins") {
      p.arity(t, 2);
      c.spec.bins = p.int32(t[1]);
      have_bins = true;
    } else if (key == "lo") {
      p.arity(t, 2);
      c.spec.lo = p.hex32(t[1]);
    } else if (key == "hi") {
      p.arity(t, 2);
      c.spec.hi = p.hex32(t[1]);
    } else if (key == "batch") {
      if (t.size() < 2) p.fail("batch needs a length");
      const std::uint64_t n = p.count(t[1]);
      if (t.size() != n + 2) p.fail("batch length does not match its values");
      const std::size_t digits = c.type == dtype::f32 ? 8 : 4;  // dtype precedes batches
      std::vector<std::uint32_t> bits;
      bits.reserve(n);
      for (std::size_t k = 2; k < t.size(); ++k)
        bits.push_back(static_cast<std::uint32_t>(p.hex(t[k], digits)));
      c.batches.push_back(std::move(bits));
    } else if (key == "counts") {
      if (t.size() < 2) p.fail("counts needs a length");
      const std::uint64_t n = p.count(t[1]);
      if (t.size() != n + 2) p.fail("counts length does not match its entries");
      sparse.clear();
      for (std::size_t k = 2; k < t.size(); ++k) {
        const std::size_t colon = t[k].find(':');
        if (colon == std::string::npos) p.fail("counts entry is not j:c: " + t[k]);
        sparse.emplace_back(static_cast<std::int64_t>(p.count(t[k].substr(0, colon))),
                            p.count(t[k].substr(colon + 1)));
      }
      have_counts = true;
    } else if (key == "nan_count") {
      p.arity(t, 2);
      c.nan_count = p.count(t[1]);
    } else if (key == "inf_count") {
      p.arity(t, 2);
      c.inf_count = p.count(t[1]);
    } else if (key == "max_abs") {
      p.arity(t, 2);
      c.max_abs = p.hex32(t[1]);
    } else if (key == "error") {
      p.arity(t, 2);
      c.error = p.error_code(t[1]);
    } else {
      p.fail("unknown record: " + key);
    }
  }
  if (!have_header) p.fail("empty file (no 'klcal-golden 1' header)");
  close_case();
  return cases;
}

/// The documented name of an error code ("invalid_range", ...), from the golden reader's own
/// table (not klcal::to_string, which the tests check). "errc(<n>)" for an unknown value.
inline std::string errc_name(errc e) {
  for (const auto& [name, value] : golden_detail::errc_names())
    if (value == e) return name;
  return "errc(" + std::to_string(static_cast<int>(e)) + ")";
}

/// The error code of a documented name, or nullopt.
inline std::optional<errc> errc_from_name(const std::string& name) {
  const auto& names = golden_detail::errc_names();
  auto it = names.find(name);
  if (it == names.end()) return std::nullopt;
  return it->second;
}

/// Reads and parses one golden file. Throws std::runtime_error (I/O or format).
inline std::vector<golden_case> load_golden_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_golden(ss.str(), path);
}

/// The *.golden files of `dir`, sorted by name. Never throws (a missing directory gives {}), so
/// it is safe in a gtest parameter generator.
inline std::vector<std::string> golden_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto& p = it->path();
    if (p.extension() == ".golden") out.push_back(p.string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// Every case of every *.golden file of `dir` (e.g. data_dir()). Throws on a parse error.
inline std::vector<golden_case> load_goldens(const std::string& dir) {
  std::vector<golden_case> all;
  for (const auto& f : golden_files(dir)) {
    auto cases = load_golden_file(f);
    for (auto& c : cases) all.push_back(std::move(c));
  }
  return all;
}

/// The search options of a golden search block (the defaults of search_options where a line was
/// omitted). Provided for symmetry; golden_search::opts is already this value.
inline search_options to_search_options(const golden_search& s) {
  return s.opts;
}

/// Name of a golden case usable as a gtest parameter name ([A-Za-z0-9_]).
inline std::string test_name(const std::string& name) {
  std::string out;
  for (char ch : name) out += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return out.empty() ? std::string("unnamed") : out;
}

/// `x` agrees with reference value `ref`: +inf exactly where ref is +inf (likewise -inf, NaN),
/// otherwise |x - ref| <= abs_tol + rel_tol * |ref|.
inline bool value_close(double ref, double x, double abs_tol, double rel_tol) {
  if (std::isnan(ref) || std::isnan(x)) return std::isnan(ref) && std::isnan(x);
  if (std::isinf(ref) || std::isinf(x)) return ref == x;
  return std::fabs(x - ref) <= abs_tol + rel_tol * std::fabs(ref);
}

/// Empty when `other` matches curve `ref` entry by entry under value_close (same length),
/// otherwise a description of the first mismatch (for test messages).
inline std::string curve_mismatch(const std::vector<double>& ref, const std::vector<double>& other,
                                  double abs_tol, double rel_tol) {
  if (ref.size() != other.size())
    return "curve length " + std::to_string(other.size()) + ", expected " +
           std::to_string(ref.size());
  for (std::size_t k = 0; k < ref.size(); ++k) {
    if (!value_close(ref[k], other[k], abs_tol, rel_tol)) {
      std::ostringstream m;
      m.precision(17);
      m << "curve[" << k << "] = " << other[k] << ", expected " << ref[k] << " (abs " << abs_tol
        << " + rel " << rel_tol << ")";
      return m.str();
    }
  }
  return {};
}

/// docs/testing.md curve tolerance: same length, +inf exactly where ref has +inf, each entry
/// within abs_tol + rel_tol * |ref|.
inline bool curve_close(const std::vector<double>& ref, const std::vector<double>& other,
                        double abs_tol, double rel_tol) {
  return curve_mismatch(ref, other, abs_tol, rel_tol).empty();
}

/// Position in the curve of chosen index `index` (a bin index or an mxnet half-width) under
/// options `o`, or -1 when `index` is not a candidate. Written from numerics.md 5.2.
inline std::int64_t candidate_position(const search_options& o, std::int64_t index) {
  std::int64_t first = o.start_bin, step = o.stride;
  if (o.meth == method::entropy && o.rules == rule_set::mxnet) {
    first = ((std::int64_t{1} << o.bits) - 1) / 2;
    step = 1;
  }
  if (step < 1 || index < first || (index - first) % step != 0) return -1;
  return (index - first) / step;
}

/// "Index optimal within tolerance" (docs/testing.md): the reference curve's value at the
/// chosen position is at most min(ref curve) + abs_tol + rel_tol * |min|. If every entry is
/// +inf, any position is optimal. False for a position outside the curve.
inline bool index_optimal(const std::vector<double>& ref_curve, std::int64_t position,
                          double abs_tol, double rel_tol) {
  if (position < 0 || position >= static_cast<std::int64_t>(ref_curve.size())) return false;
  double best = std::numeric_limits<double>::infinity();
  for (double v : ref_curve) best = std::min(best, v);
  const double v = ref_curve[static_cast<std::size_t>(position)];
  if (std::isinf(best)) return true;
  return v <= best + abs_tol + rel_tol * std::fabs(best);
}

/// Bit pattern helpers for exact comparisons in test messages.
inline std::uint32_t bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
inline std::uint64_t bits_of(double d) {
  std::uint64_t b;
  std::memcpy(&b, &d, 8);
  return b;
}

}  // namespace klcal::test
