// CPU backend histograms: multi-threaded, AVX2-vectorised exact fp32 binning with private counters.
//
// Exactness (docs/numerics.md 1.2): every element is widened exactly to fp32, then |x| * scale or
// (x - lo) * scale is rounded to fp32 (this file is compiled with -ffp-contract=off and the AVX2
// path uses separate sub/mul instructions, so nothing is fused), clamped as a float to
// [0, bins - 1] and truncated. Counts are integers, so the split over threads, the interleaved
// sub-histograms and the merge order cannot change them.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <thread>
#include <vector>

#include "cpu_isa.hpp"
#include "cpu_policy.hpp"
#include "klcal/cpu.hpp"
#include "klcal/internal/numerics.hpp"

namespace klcal::cpu {
namespace {

// ---- element widening ---------------------------------------------------------------------

std::uint32_t f32_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float from_bits(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Exact IEEE half -> fp32 (subnormal halves are normal fp32 numbers: mant * 2^-24 is exact).
float widen_f16(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu;
  const std::uint32_t m = h & 0x3ffu;
  if (e == 0) {
    const float mag = static_cast<float>(m) * 0x1p-24f;
    return from_bits(f32_bits(mag) | sign);
  }
  if (e == 31) return from_bits(sign | 0x7f800000u | (m << 13));
  return from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

float widen_bf16(std::uint16_t h) noexcept {
  return from_bits(std::uint32_t(h) << 16);
}

template <dtype T>
float load_one(const unsigned char* p, std::int64_t i) noexcept {
  if constexpr (T == dtype::f32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  } else {
    std::uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    if constexpr (T == dtype::f16) return widen_f16(h);
    return widen_bf16(h);
  }
}

// ---- binning parameters and per-thread state ------------------------------------------------

struct bin_params {
  float scale = 1.0f;  ///< float(bins) / float(hi - lo), once per histogram (numerics.md 1.2.3)
  float lo = 0.0f;
  float top = 1.0f;         ///< float(bins - 1): the clamp, exact since bins <= 2^24
  std::uint32_t dummy = 0;  ///< index of the extra counter that absorbs NaN/Inf (= bins)
  std::size_t stride = 0;   ///< distance between interleaved sub-histograms
  int subs = 1;             ///< number of interleaved sub-histograms
};

/// Statistics of one thread's range; merged exactly with detail::merge_stats.
using stats_acc = tensor_stats;

/// The bin of a finite value: the one bin formula of klcal/internal/numerics.hpp. The AVX2
/// path's max_ps(p, 0) / min_ps(p, top) / cvttps form is the same operation eight at a time.
template <bool Signed>
std::uint32_t bin_of(float x, const bin_params& bp) noexcept {
  const klcal::detail::bin_params p{bp.lo, bp.scale, bp.top};
  return static_cast<std::uint32_t>(Signed ? klcal::detail::bin_of_signed(x, p)
                                           : klcal::detail::bin_of_abs(x, p));
}

bool is_finite_bits(std::uint32_t u) noexcept {
  return (u & 0x7f800000u) != 0x7f800000u;
}

template <dtype T, bool Signed, bool Bins, bool Stats>
void scalar_range(const unsigned char* in, std::int64_t b, std::int64_t e, const bin_params& bp,
                  std::uint32_t* sub, stats_acc* st) noexcept {
  for (std::int64_t i = b; i < e; ++i) {
    const float x = load_one<T>(in, i);
    const std::uint32_t u = f32_bits(x);
    const bool fin = is_finite_bits(u);
    if constexpr (Bins) {
      const std::uint32_t k = fin ? bin_of<Signed>(x, bp) : bp.dummy;
      sub[std::size_t(i & (bp.subs - 1)) * bp.stride + k] += 1;
    }
    if constexpr (Stats) {
      if (fin) {
        st->finite_count += 1;
        st->max_abs = std::max(st->max_abs, std::fabs(x));
        // x + 0 turns -0 into +0 (numerics.md 1.3 records -0 as +0) and changes nothing else.
        const float xz = x + 0.0f;
        if (xz < st->min) st->min = xz;
        if (xz > st->max) st->max = xz;
      } else if ((u & 0x7fffffffu) == 0x7f800000u) {
        st->inf_count += 1;
      } else {
        st->nan_count += 1;
      }
    }
  }
}

#if KLCAL_CPU_X86
template <dtype T>
KLCAL_AVX2 inline __m256 load8(const unsigned char* p) noexcept {
  if constexpr (T == dtype::f32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (T == dtype::f16) return _mm256_cvtph_ps(h);  // exact, subnormals included
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <dtype T, bool Signed, bool Bins, bool Stats>
KLCAL_AVX2 void avx2_range(const unsigned char* in, std::int64_t b, std::int64_t e,
                           const bin_params& bp, std::uint32_t* sub, stats_acc* st) noexcept {
  constexpr std::int64_t esize = T == dtype::f32 ? 4 : 2;
  const __m256 scale = _mm256_set1_ps(bp.scale);
  const __m256 lo = _mm256_set1_ps(bp.lo);
  const __m256 top = _mm256_set1_ps(bp.top);
  const __m256 zero = _mm256_setzero_ps();
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
  const __m256i dummy = _mm256_set1_epi32(static_cast<int>(bp.dummy));
  const __m256 pinf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 vmax_abs = zero, vmin = pinf, vmax = ninf;
  std::uint64_t nan = 0, inf = 0;
  const std::size_t stride = bp.stride;
  std::uint32_t* s0 = sub;
  std::uint32_t* s1 = sub + (bp.subs > 1 ? 1 : 0) * stride;
  std::uint32_t* s2 = sub + (bp.subs > 2 ? 2 : 0) * stride;
  std::uint32_t* s3 = sub + (bp.subs > 3 ? 3 : 0) * stride;

  std::int64_t i = b;
  for (; i + 8 <= e; i += 8) {
    const __m256 x = load8<T>(in + i * esize);
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i mag = _mm256_and_si256(bits, abs_mask);
    const __m256i nonfinite = _mm256_cmpeq_epi32(_mm256_and_si256(bits, exp_mask), exp_mask);
    if constexpr (Bins) {
      const __m256 v = Signed ? _mm256_sub_ps(x, lo) : _mm256_castsi256_ps(mag);
      __m256 p = _mm256_mul_ps(v, scale);
      p = _mm256_max_ps(p, zero);  // returns the second operand (0) when p is NaN
      p = _mm256_min_ps(p, top);
      __m256i k = _mm256_cvttps_epi32(p);
      k = _mm256_blendv_epi8(k, dummy, nonfinite);
      // Eight equal bins (all-zero data, a zero spike) become one add of 8 instead of eight
      // increments of the same counters.
      const __m256i first = _mm256_permutevar8x32_epi32(k, _mm256_setzero_si256());
      if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(k, first)) == -1) {
        s0[_mm256_cvtsi256_si32(k)] += 8;
      } else {
        // Two indices per 64-bit extraction: fewer uops than a store and eight reloads.
        const __m128i klo = _mm256_castsi256_si128(k);
        const __m128i khi = _mm256_extracti128_si256(k, 1);
        const auto q0 = static_cast<std::uint64_t>(_mm_cvtsi128_si64(klo));
        const auto q1 = static_cast<std::uint64_t>(_mm_extract_epi64(klo, 1));
        const auto q2 = static_cast<std::uint64_t>(_mm_cvtsi128_si64(khi));
        const auto q3 = static_cast<std::uint64_t>(_mm_extract_epi64(khi, 1));
        s0[std::uint32_t(q0)] += 1;
        s1[q0 >> 32] += 1;
        s2[std::uint32_t(q1)] += 1;
        s3[q1 >> 32] += 1;
        s0[std::uint32_t(q2)] += 1;
        s1[q2 >> 32] += 1;
        s2[std::uint32_t(q3)] += 1;
        s3[q3 >> 32] += 1;
      }
    }
    if constexpr (Stats) {
      const __m256 nf = _mm256_castsi256_ps(nonfinite);
      const int nf_bits = _mm256_movemask_ps(nf);
      if (nf_bits != 0) {
        const int inf_bits =
            _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, exp_mask)));
        inf += static_cast<std::uint64_t>(__builtin_popcount(inf_bits));
        nan += static_cast<std::uint64_t>(__builtin_popcount(nf_bits & ~inf_bits));
      }
      vmax_abs = _mm256_max_ps(vmax_abs, _mm256_andnot_ps(nf, _mm256_castsi256_ps(mag)));
      const __m256 xz = _mm256_add_ps(x, zero);  // -0 -> +0, as in the scalar path
      vmin = _mm256_min_ps(vmin, _mm256_blendv_ps(xz, pinf, nf));
      vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(xz, ninf, nf));
    }
  }
  if constexpr (Stats) {
    alignas(32) float a[8], lo8[8], hi8[8];
    _mm256_store_ps(a, vmax_abs);
    _mm256_store_ps(lo8, vmin);
    _mm256_store_ps(hi8, vmax);
    for (int l = 0; l < 8; ++l) {
      st->max_abs = std::max(st->max_abs, a[l]);
      if (lo8[l] < st->min) st->min = lo8[l];
      if (hi8[l] > st->max) st->max = hi8[l];
    }
    st->nan_count += nan;
    st->inf_count += inf;
    st->finite_count += static_cast<std::uint64_t>(i - b) - nan - inf;
  }
  scalar_range<T, Signed, Bins, Stats>(in, i, e, bp, sub, st);
}
#endif

using range_fn = void (*)(const unsigned char*, std::int64_t, std::int64_t, const bin_params&,
                          std::uint32_t*, stats_acc*) noexcept;

template <dtype T, bool Signed, bool Bins, bool Stats>
range_fn pick_for() noexcept {
#if KLCAL_CPU_X86
  if (detail::cpu_use_avx2()) return &avx2_range<T, Signed, Bins, Stats>;
#endif
  return &scalar_range<T, Signed, Bins, Stats>;
}

template <dtype T>
range_fn pick_dtype(bool is_signed, bool bins, bool stats) noexcept {
  if (!bins) return pick_for<T, false, false, true>();
  if (is_signed) return stats ? pick_for<T, true, true, true>() : pick_for<T, true, true, false>();
  return stats ? pick_for<T, false, true, true>() : pick_for<T, false, true, false>();
}

range_fn pick(dtype t, bool is_signed, bool bins, bool stats) noexcept {
  switch (t) {
    case dtype::f16: return pick_dtype<dtype::f16>(is_signed, bins, stats);
    case dtype::bf16: return pick_dtype<dtype::bf16>(is_signed, bins, stats);
    default: return pick_dtype<dtype::f32>(is_signed, bins, stats);
  }
}

bool valid_dtype(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16;
}

int resolve_threads(int threads) noexcept {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(std::min(hc, 1024u));
}

/// One thread's share: a contiguous element range, its private 32-bit sub-histograms, 64-bit
/// totals (only when its range is longer than policy::flush_elements) and statistics.
struct worker {
  std::int64_t begin = 0, end = 0;
  std::vector<std::uint32_t> sub;
  std::vector<std::uint64_t> wide;
  stats_acc st;
};

void run_worker(worker& w, range_fn fn, const unsigned char* in, const bin_params& bp, bool bins,
                std::int32_t nbins) noexcept {
  for (std::int64_t b = w.begin; b < w.end; b += policy::flush_elements) {
    const std::int64_t e = std::min(w.end, b + policy::flush_elements);
    fn(in, b, e, bp, bins ? w.sub.data() : nullptr, &w.st);
    if (bins && e < w.end) {  // flush before any 32-bit counter could overflow
      for (int s = 0; s < bp.subs; ++s)
        for (std::int32_t j = 0; j < nbins; ++j) {
          w.wide[std::size_t(j)] += w.sub[std::size_t(s) * bp.stride + std::size_t(j)];
          w.sub[std::size_t(s) * bp.stride + std::size_t(j)] = 0;
        }
    }
  }
}

/// Shared driver of histogram_accumulate and tensor_stats_accumulate (bins == false).
status accumulate(const void* h_in, dtype t, std::int64_t n, const histogram_spec* spec,
                  std::uint64_t* h_counts, tensor_stats* h_stats, int threads) noexcept {
  const bool bins = spec != nullptr;
  const std::int32_t nbins = bins ? spec->bins : 0;
  bin_params bp;
  if (bins) {
    bp.scale = klcal::detail::bin_scale(nbins, spec->lo, spec->hi);
    bp.lo = spec->lo;
    bp.top = static_cast<float>(nbins - 1);
    bp.dummy = static_cast<std::uint32_t>(nbins);
    bp.subs = nbins <= policy::max_bins_for_sub_histograms &&
                      n >= policy::min_elements_per_bin_for_sub_histograms * nbins
                  ? policy::sub_histograms
                  : 1;
    // +1 for the NaN/Inf counter, rounded up to a cache line of counters.
    bp.stride = (std::size_t(nbins) + 1 + 15) / 16 * 16;
  }
  const auto* in = static_cast<const unsigned char*>(h_in);
  const range_fn fn = pick(t, bins && spec->kind == layout::signed_, bins, h_stats != nullptr);

  // More threads than n / max(min chunk, bins) would spend longer zeroing and merging private
  // histograms than binning; this also bounds memory for huge bin counts.
  const std::int64_t per = std::max<std::int64_t>(policy::min_elements_per_thread, nbins);
  const std::int64_t want = std::max<std::int64_t>(1, n / per);
  const int nt = static_cast<int>(std::min<std::int64_t>(resolve_threads(threads), want));

  std::vector<worker> ws;
  try {
    ws.resize(std::size_t(nt));
    for (int k = 0; k < nt; ++k) {
      ws[std::size_t(k)].begin = n * k / nt;
      ws[std::size_t(k)].end = n * (k + 1) / nt;
      if (bins) {
        ws[std::size_t(k)].sub.assign(bp.stride * std::size_t(bp.subs), 0u);
        if (ws[std::size_t(k)].end - ws[std::size_t(k)].begin > policy::flush_elements)
          ws[std::size_t(k)].wide.assign(std::size_t(nbins), 0u);
      }
    }
  } catch (const std::bad_alloc&) {
    return errc::out_of_memory;
  }

  // Workers 1..nt-1 on their own threads, worker 0 on the caller's. A thread that cannot be
  // started is run here instead: the result does not depend on who runs which range.
  std::vector<std::thread> pool;
  std::vector<char> inline_run(std::size_t(nt), 0);
  for (int k = 1; k < nt; ++k) {
    try {
      pool.emplace_back(run_worker, std::ref(ws[std::size_t(k)]), fn, in, std::cref(bp), bins,
                        nbins);
    } catch (...) {
      inline_run[std::size_t(k)] = 1;
    }
  }
  run_worker(ws[0], fn, in, bp, bins, nbins);
  for (int k = 1; k < nt; ++k)
    if (inline_run[std::size_t(k)]) run_worker(ws[std::size_t(k)], fn, in, bp, bins, nbins);
  for (auto& th : pool) th.join();

  // Merge in thread order (integer sums: exact and order-independent anyway).
  stats_acc total;
  for (int k = 0; k < nt; ++k) {
    const worker& w = ws[std::size_t(k)];
    klcal::detail::merge_stats(total, w.st);
    if (!bins) continue;
    for (std::int32_t j = 0; j < nbins; ++j) {
      std::uint64_t c = w.wide.empty() ? 0 : w.wide[std::size_t(j)];
      for (int s = 0; s < bp.subs; ++s) c += w.sub[std::size_t(s) * bp.stride + std::size_t(j)];
      h_counts[j] += c;
    }
  }
  if (h_stats != nullptr) klcal::detail::merge_stats(*h_stats, total);
  return errc::ok;
}

}  // namespace

status histogram_accumulate(const void* h_in, dtype t, std::int64_t n, const histogram_spec& spec,
                            std::uint64_t* h_counts, tensor_stats* h_stats, int threads) noexcept {
  if (!valid_dtype(t)) return errc::invalid_dtype;
  if (n < 0) return errc::invalid_count;
  if (status s = validate(spec); !s.ok()) return s;
  if (n == 0) return errc::ok;
  if (h_in == nullptr || h_counts == nullptr) return errc::null_pointer;
  return accumulate(h_in, t, n, &spec, h_counts, h_stats, threads);
}

status tensor_stats_accumulate(const void* h_in, dtype t, std::int64_t n, tensor_stats* h_stats,
                               int threads) noexcept {
  if (!valid_dtype(t)) return errc::invalid_dtype;
  if (n < 0) return errc::invalid_count;
  if (n == 0) return errc::ok;
  if (h_in == nullptr || h_stats == nullptr) return errc::null_pointer;
  return accumulate(h_in, t, n, nullptr, nullptr, h_stats, threads);
}

status histogram_fold_pow2(std::uint64_t* h_counts, std::int32_t bins,
                           std::int32_t doublings) noexcept {
  if (bins < 2) return errc::too_few_bins;
  if (bins > max_bins) return errc::too_many_bins;
  if ((bins & (bins - 1)) != 0) return errc::bins_not_power_of_two;
  if (doublings < 0) return errc::invalid_count;  // as the GPU API
  if (h_counts == nullptr) return errc::null_pointer;
  if (doublings == 0) return errc::ok;
  int log2b = 0;
  while ((std::int32_t{1} << log2b) < bins) ++log2b;
  const int d = std::min<int>(doublings, log2b);
  // `d` pairwise merges at once: new[j] = sum of old[j 2^d .. (j+1) 2^d). Block j starts at
  // j 2^d >= j, so reading ascending blocks and writing bin j never reads an overwritten bin.
  const std::int32_t width = std::int32_t{1} << d;
  const std::int32_t kept = bins >> d;
  for (std::int32_t j = 0; j < kept; ++j) {
    std::uint64_t s = 0;
    for (std::int32_t k = 0; k < width; ++k) s += h_counts[std::size_t(j) * width + k];
    h_counts[j] = s;
  }
  std::fill(h_counts + kept, h_counts + bins, std::uint64_t{0});
  return errc::ok;
}

}  // namespace klcal::cpu
