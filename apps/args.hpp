// Command-line argument helpers of the klcal tool: "--opt value" / "--opt=value", checked numbers.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli.hpp"

namespace klcal::cli {

/// Walks argv; options may be written "--opt value" or "--opt=value".
class arg_walker {
 public:
  explicit arg_walker(const std::vector<std::string>& a) : a_(a) {}
  bool done() const { return i_ >= a_.size(); }
  /// Takes the next argument; for "--opt=value" returns "--opt" and keeps the value pending.
  std::string next() {
    std::string s = a_[i_++];
    pending_.clear();
    has_pending_ = false;
    if (s.size() > 2 && s[0] == '-' && s[1] == '-') {
      auto eq = s.find('=');
      if (eq != std::string::npos) {
        pending_ = s.substr(eq + 1);
        has_pending_ = true;
        s = s.substr(0, eq);
      }
    }
    return s;
  }
  /// The value of option `opt` (from "=value" or the next argument).
  std::string value(const std::string& opt) {
    if (has_pending_) {
      has_pending_ = false;
      return pending_;
    }
    if (i_ >= a_.size()) throw usage_error("option " + opt + " needs a value");
    return a_[i_++];
  }
  /// Rejects "--flag=value" for options without a value.
  void no_value(const std::string& opt) {
    if (has_pending_) throw usage_error("option " + opt + " takes no value");
  }

 private:
  const std::vector<std::string>& a_;
  std::size_t i_ = 0;
  std::string pending_;
  bool has_pending_ = false;
};

/// Parses an integer option in [lo, hi] ("--bins 'x': not an integer", "--bins 0: must be ...").
inline std::int64_t parse_int(const std::string& opt, const std::string& v, std::int64_t lo,
                              std::int64_t hi, const std::string& why = "") {
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE) {
    throw usage_error(opt + " '" + v + "': not an integer");
  }
  if (x < lo || x > hi) {
    throw usage_error(opt + " " + v + ": must be between " + std::to_string(lo) + " and " +
                      std::to_string(hi) + (why.empty() ? "" : " (" + why + ")"));
  }
  return x;
}

/// Parses a finite floating-point option in [lo, hi].
inline double parse_double(const std::string& opt, const std::string& v, double lo, double hi) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0') throw usage_error(opt + " '" + v + "': not a number");
  if (!(x >= lo && x <= hi)) {
    throw usage_error(opt + " " + v + ": must be between " + fmt_g(lo) + " and " + fmt_g(hi));
  }
  return x;
}

/// Parses one --method value: entropy, max, percentile or mse.
inline method parse_method_option(const std::string& opt, const std::string& v) {
  if (v == "entropy") return method::entropy;
  if (v == "max") return method::max;
  if (v == "percentile") return method::percentile;
  if (v == "mse") return method::mse;
  throw usage_error(opt + " '" + v + "': expected entropy, max, percentile or mse");
}

/// Parses a --rules value: tensorrt or mxnet.
inline rule_set parse_rules_option(const std::string& opt, const std::string& v) {
  if (v == "tensorrt") return rule_set::tensorrt;
  if (v == "mxnet") return rule_set::mxnet;
  throw usage_error(opt + " '" + v + "': expected tensorrt or mxnet");
}

/// Parses a --void2 value: bf16 (the only meaning klcal gives a 2-byte void descr).
inline formats::npy_void2 parse_void2_option(const std::string& opt, const std::string& v) {
  if (v == "bf16") return formats::npy_void2::bf16;
  throw usage_error(opt + " '" + v + "': expected bf16 (read '<V2' arrays as bfloat16)");
}

}  // namespace klcal::cli
