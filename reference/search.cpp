// Reference threshold search: the direct O(i)-per-candidate formulas of docs/numerics.md 2 to 5.
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <vector>

#include "detail.hpp"
#include "klcal/reference.hpp"

namespace klcal::reference {

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

// numerics.md 6, for the options; the spec has been checked already.
status check_options(const histogram_spec& spec, const search_options& o) {
  if (o.meth != method::entropy && o.meth != method::max && o.meth != method::percentile &&
      o.meth != method::mse)
    return errc::invalid_option;
  if (o.rules != rule_set::tensorrt && o.rules != rule_set::mxnet) return errc::invalid_option;
  if (o.zero_bin != zero_bin_policy::copy_next && o.zero_bin != zero_bin_policy::keep)
    return errc::invalid_option;
  if (o.bits < 2 || o.bits > 16) return errc::invalid_bits;
  if (o.meth == method::max) return errc::ok;  // any layout, no further options
  if (o.meth == method::percentile) {
    if (!(o.percentile >= 0.0 && o.percentile <= 100.0)) return errc::invalid_percentile;
    if (spec.kind != layout::abs) return errc::layout_mismatch;
    return errc::ok;
  }
  if (o.meth == method::entropy && o.rules == rule_set::mxnet) {
    if (spec.kind != layout::signed_) return errc::layout_mismatch;
    if (spec.bins % 2 == 0 || spec.lo != -spec.hi) return errc::bins_not_odd;
    if (o.is_unsigned) return errc::invalid_option;
    const std::int64_t levels = (std::int64_t{1} << o.bits) - 1;
    if (spec.bins / 2 < levels / 2) return errc::start_bin_out_of_range;
    return errc::ok;
  }
  // tensorrt entropy and mse (mse ignores `rules`: it has only the NVIDIA rule).
  if (spec.kind != layout::abs) return errc::layout_mismatch;
  if (o.start_bin < 1) return errc::start_bin_out_of_range;
  if (o.stride < 1) return errc::invalid_stride;
  if (o.meth == method::entropy && spec.bins < o.start_bin) return errc::start_bin_out_of_range;
  if (o.meth == method::mse && spec.bins <= o.start_bin) return errc::start_bin_out_of_range;
  return errc::ok;
}

std::uint64_t total(const std::vector<std::uint64_t>& c) {
  std::uint64_t t = 0;
  for (std::uint64_t x : c) t += x;
  return t;
}

// The bin that holds the value 0 (numerics.md 5.3, signed layout), by the binning rules.
std::int32_t zero_bin_index(const histogram_spec& spec) {
  return bin_of(spec, 0.0f);
}

// numerics.md 5.3: empty, or every count outside the bin of 0 is zero.
bool empty_or_all_zero(const std::vector<std::uint64_t>& c, const histogram_spec& spec) {
  const std::size_t zb =
      spec.kind == layout::abs ? 0 : static_cast<std::size_t>(zero_bin_index(spec));
  for (std::size_t j = 0; j < c.size(); ++j)
    if (j != zb && c[j] != 0) return false;
  return true;  // also covers T = 0
}

// KL of one tensorrt candidate i (numerics.md 2 step 4), directly from its definition.
double tensorrt_kl(const std::vector<std::uint64_t>& c, std::int64_t i, std::int64_t levels) {
  const std::size_t n = static_cast<std::size_t>(i);
  // P: the first i bins, the tail added to the last kept bin.
  std::vector<std::uint64_t> p(c.begin(), c.begin() + i);
  std::uint64_t tail = 0;
  for (std::size_t j = n; j < c.size(); ++j) tail += c[j];
  p[n - 1] += tail;
  // Q: level g(j) = floor(j * L / i); levels are contiguous runs of j. Per run: M_g (mass) and
  // n_g (non-empty bins), on c without the tail; Q[j] = M_g / n_g where c[j] > 0.
  std::vector<double> q(n, 0.0);
  std::size_t run_begin = 0;
  while (run_begin < n) {
    const std::int64_t g = static_cast<std::int64_t>(run_begin) * levels / i;
    std::size_t run_end = run_begin;
    while (run_end < n && static_cast<std::int64_t>(run_end) * levels / i == g) ++run_end;
    std::uint64_t mass = 0;
    std::uint64_t nonempty = 0;
    for (std::size_t j = run_begin; j < run_end; ++j) {
      mass += c[j];
      if (c[j] > 0) ++nonempty;
    }
    for (std::size_t j = run_begin; j < run_end; ++j)
      if (c[j] > 0) q[j] = static_cast<double>(mass) / static_cast<double>(nonempty);
    run_begin = run_end;
  }
  std::uint64_t sum_p_int = 0;
  for (std::uint64_t x : p) sum_p_int += x;
  double sum_q = 0.0;
  for (double x : q) sum_q += x;
  if (sum_p_int == 0 || sum_q == 0.0) return inf;
  const double sum_p = static_cast<double>(sum_p_int);
  double kl = 0.0;
  for (std::size_t j = 0; j < n; ++j) {
    if (p[j] == 0) continue;      // 0 ln 0 = 0
    if (q[j] == 0.0) return inf;  // mass where q has none: the last kept bin empty, tail > 0
    const double pj = static_cast<double>(p[j]) / sum_p;
    const double qj = q[j] / sum_q;
    kl += pj * std::log(pj / qj);
  }
  return kl;
}

// MXNet smoothing of one raw vector (numerics.md 3); false when the candidate is +inf.
bool smooth(std::vector<double>& v) {
  constexpr double eps = 1e-4;
  std::size_t zeros = 0;
  for (double x : v)
    if (x == 0.0) ++zeros;
  const std::size_t nonzeros = v.size() - zeros;
  if (nonzeros == 0) return false;
  const double eps1 = eps * static_cast<double>(zeros) / static_cast<double>(nonzeros);
  if (eps1 >= 1.0) return false;
  for (double& x : v) x = x == 0.0 ? eps : x - eps1;
  return true;
}

// KL of one mxnet half-width i (numerics.md 3).
double mxnet_kl(const std::vector<std::uint64_t>& c, std::int64_t i, std::int64_t levels) {
  const std::int64_t b = static_cast<std::int64_t>(c.size());
  const std::int64_t z = b / 2;
  const std::int64_t s = 2 * i + 1;
  const std::int64_t first = z - i;  // first window bin
  std::vector<std::uint64_t> p_int(static_cast<std::size_t>(s), 0);
  std::vector<std::uint64_t> w(static_cast<std::size_t>(s), 0);
  for (std::int64_t j = 0; j <= first; ++j) p_int[0] += c[j];  // left outliers + first bin
  for (std::int64_t k = 1; k < s; ++k) p_int[k] = c[first + k];
  for (std::int64_t j = z + i + 1; j < b; ++j) p_int[s - 1] += c[j];  // right outliers
  for (std::int64_t k = 1; k < s; ++k) w[k] = c[first + k];           // w[0] = 0: the MXNet quirk
  const std::int64_t m = s / levels;
  std::vector<double> p(static_cast<std::size_t>(s));
  std::vector<double> q(static_cast<std::size_t>(s), 0.0);
  std::uint64_t sum_p_int = 0;
  for (std::int64_t k = 0; k < s; ++k) {
    p[k] = static_cast<double>(p_int[k]);
    sum_p_int += p_int[k];
  }
  for (std::int64_t g = 0; g < levels; ++g) {
    const std::int64_t lo = g * m;
    const std::int64_t hi = g == levels - 1 ? s : (g + 1) * m;
    std::uint64_t mass = 0;
    std::uint64_t nonzero = 0;
    for (std::int64_t k = lo; k < hi; ++k) {
      mass += w[k];
      if (w[k] != 0) ++nonzero;
    }
    if (nonzero == 0) continue;
    for (std::int64_t k = lo; k < hi; ++k)
      if (p_int[k] != 0) q[k] = static_cast<double>(mass) / static_cast<double>(nonzero);
  }
  // Sums before smoothing (smoothing preserves them; the P sum is then exact).
  double sum_q = 0.0;
  for (double x : q) sum_q += x;
  if (!smooth(p) || !smooth(q)) return inf;
  const double sum_p = static_cast<double>(sum_p_int);
  double kl = 0.0;
  for (std::int64_t k = 0; k < s; ++k) {
    const double pk = p[k] / sum_p;
    const double qk = q[k] / sum_q;
    kl += pk * std::log(pk / qk);
  }
  return kl;
}

// Sum of c[j] for j in [from, to).
std::uint64_t mass(const std::vector<std::uint64_t>& c, std::int64_t from, std::int64_t to) {
  std::uint64_t m = 0;
  for (std::int64_t j = from; j < to; ++j) m += c[static_cast<std::size_t>(j)];
  return m;
}

float scale_of(double amax, std::int32_t qmax_value) {
  // numerics.md 5.1: round amax to fp32 first, then one correctly rounded fp32 division.
  const float a = static_cast<float>(amax);
  const float q = static_cast<float>(qmax_value);
  return a / q;
}

std::int32_t qmax_of(const search_options& o) {
  if (o.meth == method::entropy && o.rules == rule_set::mxnet) return (1 << (o.bits - 1)) - 1;
  return o.is_unsigned ? (1 << o.bits) - 1 : (1 << (o.bits - 1)) - 1;
}

void search_tensorrt(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
                     const search_options& o, search_output& out) {
  std::vector<std::uint64_t> c = counts;
  if (o.zero_bin == zero_bin_policy::copy_next) c[0] = c[1];
  const std::int64_t b = spec.bins;
  const std::int64_t levels = std::int64_t{1} << (o.is_unsigned ? o.bits : o.bits - 1);
  std::int64_t best_i = -1;
  double best = inf;
  for (std::int64_t i = o.start_bin; i <= b; i += o.stride) {
    const double kl = tensorrt_kl(c, i, levels);
    out.curve.push_back(kl);
    if (best_i < 0 || kl <= best) {  // `<=`: ties go to the largest i (NVIDIA's last argmin)
      best = kl;
      best_i = i;
    }
  }
  const double w = static_cast<double>(spec.hi) / static_cast<double>(b);
  search_result& r = out.result;
  r.index = static_cast<std::int32_t>(best_i);
  r.amax = static_cast<double>(best_i) * w;
  r.score = best;
  r.degenerate = best == inf;
  r.clipped_fraction =
      static_cast<double>(mass(counts, best_i, b)) / static_cast<double>(total(counts));
}

void search_mxnet(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
                  const search_options& o, search_output& out) {
  const std::int64_t b = spec.bins;
  const std::int64_t z = b / 2;
  const std::int64_t levels = (std::int64_t{1} << o.bits) - 1;
  std::int64_t best_i = -1;
  double best = inf;
  for (std::int64_t i = levels / 2; i <= z; ++i) {
    const double kl = mxnet_kl(counts, i, levels);
    out.curve.push_back(kl);
    if (best_i < 0 || kl < best) {  // `<`: ties go to the first (smallest) i
      best = kl;
      best_i = i;
    }
  }
  const double bin_width = 2.0 * static_cast<double>(spec.hi) / static_cast<double>(b);
  search_result& r = out.result;
  r.index = static_cast<std::int32_t>(best_i);
  r.amax = (static_cast<double>(best_i) + 0.5) * bin_width;
  r.score = best;
  r.degenerate = best == inf;
  const std::uint64_t outside = mass(counts, 0, z - best_i) + mass(counts, z + best_i + 1, b);
  r.clipped_fraction = static_cast<double>(outside) / static_cast<double>(total(counts));
}

void search_percentile(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
                       const search_options& o, search_output& out) {
  __extension__ typedef unsigned __int128 u128;  // GCC and Clang; both products are < 2^101
  const std::int64_t b = spec.bins;
  const std::uint64_t t = total(counts);
  // P = llround(p * 1e9): p read as a decimal with at most 9 fractional digits, in units of
  // 1e-9 percent; 100 percent is 100e9 units.
  const auto units = static_cast<u128>(std::llround(o.percentile * 1e9));
  const auto hundred_percent = static_cast<u128>(100'000'000'000ULL);
  std::int64_t k = b - 1;
  std::uint64_t prefix = 0;  // S(j + 1)
  for (std::int64_t j = 0; j < b; ++j) {
    prefix += counts[j];
    if (hundred_percent * prefix >= units * t) {
      k = j;
      break;
    }
  }
  const double w = static_cast<double>(spec.hi) / static_cast<double>(b);
  search_result& r = out.result;
  r.index = static_cast<std::int32_t>(k);
  r.amax = static_cast<double>(k) * w;  // the left edge of bin k, as NVIDIA returns it
  r.score = 0.0;
  r.clipped_fraction = static_cast<double>(mass(counts, k, b)) / static_cast<double>(t);
}

void search_mse(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
                const search_options& o, search_output& out) {
  const std::int64_t b = spec.bins;
  const double w = static_cast<double>(spec.hi) / static_cast<double>(b);
  const double qmax_value = static_cast<double>(qmax_of(o));
  std::int64_t best_i = -1;
  double best = inf;
  for (std::int64_t i = o.start_bin; i <= b - 1; i += o.stride) {
    const double a = (static_cast<double>(i) + 0.5) * w;
    const double s = qmax_value / a;
    double sum = 0.0;
    for (std::int64_t k = 0; k < b; ++k) {
      const double m = (static_cast<double>(k) + 0.5) * w;
      double r = std::rint(m * s);  // default rounding mode: half to even
      if (r > qmax_value) r = qmax_value;
      if (r < -qmax_value) r = -qmax_value;
      const double d = r / s - m;
      sum += static_cast<double>(counts[k]) * (d * d);
    }
    const double score = sum / static_cast<double>(b);
    out.curve.push_back(score);
    if (best_i < 0 || score < best) {  // `<`: the first minimum wins
      best = score;
      best_i = i;
    }
  }
  search_result& r = out.result;
  r.index = static_cast<std::int32_t>(best_i);
  r.amax = (static_cast<double>(best_i) + 0.5) * w;
  r.score = best;
  r.clipped_fraction =
      static_cast<double>(mass(counts, best_i + 1, b)) / static_cast<double>(total(counts));
}

}  // namespace

status search(const std::vector<std::uint64_t>& counts, const histogram_spec& spec, float max_abs,
              const search_options& opts, search_output* out) noexcept {
  if (out == nullptr) return errc::null_pointer;
  if (status s = detail::check_spec(spec); !s.ok()) return s;
  if (status s = check_options(spec, opts); !s.ok()) return s;
  if (counts.size() != static_cast<std::size_t>(spec.bins)) return errc::invalid_count;

  search_output o;
  try {  // the direct formulas allocate; noexcept means report, never terminate
    switch (opts.meth) {
      case method::entropy:
        if (opts.rules == rule_set::mxnet)
          search_mxnet(counts, spec, opts, o);
        else
          search_tensorrt(counts, spec, opts, o);
        break;
      case method::percentile:
        if (total(counts) > 0) search_percentile(counts, spec, opts, o);
        break;
      case method::mse: search_mse(counts, spec, opts, o); break;
      case method::max:
        o.result.amax = static_cast<double>(max_abs);
        o.result.index = spec.bins;
        o.result.score = 0.0;
        o.result.clipped_fraction = 0.0;
        break;
    }
  } catch (const std::bad_alloc&) {
    return errc::out_of_memory;
  }
  if (empty_or_all_zero(counts, spec)) {
    // numerics.md 5.3: every field zero, flagged; the curve stays what the formulas give.
    o.result = search_result{};
    o.result.degenerate = true;
  } else {
    o.result.scale = scale_of(o.result.amax, qmax_of(opts));
  }
  *out = std::move(o);
  return errc::ok;
}

}  // namespace klcal::reference
