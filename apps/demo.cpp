// `klcal demo`: writes a deterministic synthetic activation set (.npy/.npz) and calibrates it.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <limits>
#include <random>

#include "args.hpp"
#include "cli.hpp"

// The generators below use only +, -, *, / and sqrt, which IEEE-754 rounds exactly, one
// operation per statement where it matters; contraction into FMA would change results.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace klcal::cli {
namespace {

// Portable random numbers: std::mt19937_64's output sequence is fixed by the C++ standard, but
// std::normal_distribution etc. are not, and libm's log/cos may differ in the last bit between
// platforms. So every transform here is our own, built from correctly rounded operations.
class portable_rng {
 public:
  explicit portable_rng(std::uint64_t seed) : eng_(seed) {}
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(eng_() >> 11) * 0x1p-53; }
  /// Natural logarithm for x > 0: x = m 2^e, ln m = 2 atanh((m-1)/(m+1)) by a fixed series.
  static double ln(double x) {
    int e = 0;
    double m = std::frexp(x, &e);  // exact
    if (m < 0.70710678118654752) {
      m = m * 2.0;  // exact
      e -= 1;
    }
    double num = m - 1.0;
    double den = m + 1.0;
    double z = num / den;
    double z2 = z * z;
    double term = z;
    double sum = z;
    for (int k = 1; k <= 14; ++k) {
      term = term * z2;
      double t = term / double(2 * k + 1);
      sum = sum + t;
    }
    double ln_m = 2.0 * sum;
    double e_ln2 = double(e) * 0.69314718055994531;
    return ln_m + e_ln2;
  }
  /// Standard normal by Marsaglia's polar method (log and sqrt only).
  double gauss() {
    for (;;) {
      double a = uniform();
      double b = uniform();
      double v1 = 2.0 * a - 1.0;
      double v2 = 2.0 * b - 1.0;
      double s1 = v1 * v1;
      double s2 = v2 * v2;
      double s = s1 + s2;
      if (s >= 1.0 || s == 0.0) continue;
      double l = ln(s);
      double r = -2.0 * l;
      r = r / s;
      return v1 * std::sqrt(r);
    }
  }
  /// Laplace(0, b) by inversion.
  double laplace(double b) {
    double u = uniform();
    double sign = u < 0.5 ? -1.0 : 1.0;
    double v = u < 0.5 ? 2.0 * u : 2.0 * (1.0 - u);  // (0, 1]; exact
    if (v == 0.0) v = 0x1p-53;
    return sign * b * -ln(v);
  }
  /// Student-t with 3 degrees of freedom: Z / sqrt(chi2_3 / 3).
  double student_t3() {
    double z = gauss();
    double c = 0.0;
    for (int k = 0; k < 3; ++k) {
      double g = gauss();
      double g2 = g * g;
      c = c + g2;
    }
    double d = c / 3.0;
    return z / std::sqrt(d);
  }

 private:
  std::mt19937_64 eng_;
};

/// fp32 -> IEEE half, round to nearest even (overflow -> inf, NaN kept).
std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return std::uint16_t(sign | (absx > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (absx >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds to >= 65520 -> inf
  if (absx < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (absx < 0x33000000u) return std::uint16_t(sign);  // < 2^-25 rounds to 0
    std::uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    // value = mant * 2^(e - 150) and the half subnormal unit is 2^-24: q = mant * 2^(e - 126).
    int e = int(absx >> 23);
    int rs = 126 - e;  // right shift, 14..24
    std::uint32_t q = mant >> rs;
    std::uint32_t rem = mant & ((1u << rs) - 1);
    std::uint32_t half = 1u << (rs - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return std::uint16_t(sign | q);
  }
  std::uint32_t e = (absx >> 23) - 112;
  std::uint32_t m = absx & 0x7fffffu;
  std::uint32_t q = (e << 10) | (m >> 13);
  std::uint32_t rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) ++q;  // carry into the exponent is correct
  return std::uint16_t(sign | q);
}

struct layer_def {
  const char* name;
  bool half;
};

constexpr layer_def k_layers[] = {
    {"conv1.relu", false},       // ReLU of a Gaussian: a spike at zero
    {"conv2.gauss", false},      // Gaussian
    {"block3.laplace", true},    // Laplace, fp16
    {"attn.student_t3", false},  // heavy-tailed Student-t
    {"mlp.bimodal", true},       // two Gaussian modes, fp16
};

double sample(portable_rng& r, int layer) {
  switch (layer) {
    case 0: {
      double v = 0.8 * r.gauss() + 0.1;
      return v > 0 ? v : 0.0;
    }
    case 1: return 0.5 * r.gauss();
    case 2: return r.laplace(0.25);
    case 3: return 0.2 * r.student_t3();
    default: {
      double c = r.uniform() < 0.5 ? -1.0 : 1.0;
      return c + 0.45 * r.gauss();
    }
  }
}

std::string layer_npy(portable_rng& r, int layer, std::int64_t n) {
  if (k_layers[layer].half) {
    std::vector<std::uint16_t> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = float_to_half(static_cast<float>(sample(r, layer)));
    return formats::npy_bytes(v.data(), formats::npy_dtype::f2, {n / 512, 512});
  }
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(sample(r, layer));
  return formats::npy_bytes(v.data(), formats::npy_dtype::f4, {n / 512, 512});
}

const char* k_demo_help =
    R"(usage: klcal demo [--out DIR] [--keep] [--force] [--device D] [--threads N] [--quiet]

Writes a deterministic synthetic activation set (Gaussian, ReLU, Laplace, Student-t, bimodal;
fp32 and fp16; 3.1 million values) as batch0.npz (stored), batch1.npz (deflate) and
head.logits.npy, then runs `klcal calibrate` on it and writes calibration.cache and
calibration.json next to the data.

  --out DIR    write into DIR (created if missing) instead of a new temporary directory
  --keep       keep the generated inputs of a temporary directory (default: removed after)
  --force      overwrite existing files in --out
)";

}  // namespace

int run_demo(const std::vector<std::string>& args) {
  std::string out_dir;
  bool keep = false, force = false, quiet = false;
  std::string device = "auto";
  int threads = 0;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--help" || a == "-h") {
      std::cout << k_demo_help;
      return exit_ok;
    } else if (a == "--out") {
      out_dir = w.value(a);
    } else if (a == "--keep") {
      w.no_value(a);
      keep = true;
    } else if (a == "--force") {
      w.no_value(a);
      force = true;
    } else if (a == "--quiet" || a == "-q") {
      w.no_value(a);
      quiet = true;
    } else if (a == "--device") {
      device = w.value(a);
    } else if (a == "--threads") {
      threads = static_cast<int>(parse_int(a, w.value(a), 0, 4096));
    } else {
      throw usage_error("unknown argument '" + a + "' (see klcal demo --help)");
    }
  }
  bool temp = out_dir.empty();
  if (temp) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/klcal-demo-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) {
      throw error(errc::io_error,
                  tmpl + ": cannot create a temporary directory: " + std::strerror(errno));
    }
    out_dir = buf.data();
  } else {
    struct stat st {};
    if (::stat(out_dir.c_str(), &st) != 0) {
      if (::mkdir(out_dir.c_str(), 0777) != 0) {
        throw error(errc::io_error,
                    "--out " + out_dir + ": cannot create directory: " + std::strerror(errno));
      }
    } else if (!S_ISDIR(st.st_mode)) {
      throw error(errc::io_error, "--out " + out_dir + ": not a directory");
    }
  }
  const std::vector<std::string> inputs = {out_dir + "/batch0.npz", out_dir + "/batch1.npz",
                                           out_dir + "/head.logits.npy"};
  calibrate_settings s;
  s.inputs = {out_dir};
  s.cache_path = out_dir + "/calibration.cache";
  s.json_path = out_dir + "/calibration.json";
  s.force = force;
  s.quiet = quiet;
  s.device = device;
  s.threads = threads;
  for (const auto& f : inputs) {
    if (path_exists(f) && !force) {
      throw error(errc::io_error, f + ": file exists (use --force to overwrite)");
    }
  }
  for (const auto* f : {&s.cache_path, &s.json_path}) {
    if (path_exists(*f) && !force) {
      throw error(errc::io_error, *f + ": file exists (use --force to overwrite)");
    }
  }

  constexpr std::int64_t per_batch = 1 << 18;
  portable_rng rng(20260101);
  for (int b = 0; b < 2; ++b) {
    std::vector<formats::npz_entry> entries;
    entries.reserve(std::size(k_layers));
    for (int l = 0; l < static_cast<int>(std::size(k_layers)); ++l) {
      entries.push_back({std::string(k_layers[l].name) + ".npy", layer_npy(rng, l, per_batch)});
    }
    formats::write_file(inputs[b], formats::npz_bytes(entries, b == 1));
  }
  {
    std::vector<float> logits(std::size_t{1} << 19);
    for (auto& x : logits) x = static_cast<float>(3.0 * rng.gauss());
    // A few non-finite values show the NaN/Inf counters (they are never binned).
    logits[1000] = std::numeric_limits<float>::quiet_NaN();
    logits[2000] = std::numeric_limits<float>::quiet_NaN();
    logits[3000] = std::numeric_limits<float>::infinity();
    formats::write_file(inputs[2], formats::npy_bytes(logits.data(), formats::npy_dtype::f4,
                                                      {std::int64_t(logits.size())}));
  }
  if (!quiet) {
    std::cout << "klcal demo: wrote 3145728 values (5 layers x 2 batches in batch0.npz [stored] "
                 "and batch1.npz [deflate], plus head.logits.npy) to "
              << out_dir << "\n\n";
  }
  int rc = calibrate(s);
  if (rc != exit_ok) return rc;
  if (temp && !keep) {
    for (const auto& f : inputs) ::unlink(f.c_str());
  }
  if (!quiet) {
    std::cout << "\nTensorRT calibration cache: " << s.cache_path
              << "\nQ/DQ parameters (JSON):     " << s.json_path << "\n";
    if (temp && !keep) std::cout << "(generated inputs removed; --keep keeps them)\n";
  }
  return exit_ok;
}

}  // namespace klcal::cli
