// Small helpers of the klcal tool.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli.hpp"

namespace klcal::cli {

void warn(const std::string& msg) {
  std::cerr << "klcal: warning: " << escaped(msg) << "\n";
}

const char* method_name(method m) {
  switch (m) {
    case method::entropy: return "entropy";
    case method::max: return "max";
    case method::percentile: return "percentile";
    case method::mse: return "mse";
  }
  return "?";
}

const char* rules_name(rule_set r) {
  return r == rule_set::mxnet ? "mxnet" : "tensorrt";
}

const char* range_name(range_policy p) {
  switch (p) {
    case range_policy::fixed: return "fixed";
    case range_policy::two_pass: return "two-pass";
    case range_policy::streaming: return "streaming";
  }
  return "?";
}

std::string fmt_g(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

bool path_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

}  // namespace klcal::cli
