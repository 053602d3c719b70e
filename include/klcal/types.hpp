// Plain value types shared by every klcal layer: element types, histogram specs, search options and
// results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "klcal/status.hpp"

namespace klcal {

/// Largest bin count any histogram may have (keeps fp32 bin arithmetic exact, docs/numerics.md 1).
inline constexpr std::int32_t max_bins = 1 << 24;

/// Element type of an input tensor. f16 and bf16 are widened exactly to fp32 before binning.
enum class dtype : std::uint8_t { f32 = 0, f16 = 1, bf16 = 2 };

/// Size of one element of `t` in bytes (0 for a value outside the enum).
constexpr std::size_t dtype_size(dtype t) noexcept {
  return t == dtype::f32 ? 4 : (t == dtype::f16 || t == dtype::bf16) ? 2 : 0;
}

/// How values map onto bins (docs/numerics.md 1).
enum class layout : std::uint8_t {
  abs = 0,      ///< bins over [0, hi), filled with |x|; lo must be 0
  signed_ = 1,  ///< bins over [lo, hi), filled with x
};

/// Bin count and range of one histogram. The fp32 bin scale is float(bins) / float(hi - lo).
struct histogram_spec {
  layout kind = layout::abs;
  std::int32_t bins = 2048;  ///< 2 .. max_bins
  float lo = 0.0f;           ///< lower edge; 0 for layout::abs
  float hi = 1.0f;           ///< upper edge; values on or past it land in the last bin
};

/// Checks a spec against docs/numerics.md section 6 (bins, finite range, hi > lo, lo == 0 for abs).
status validate(const histogram_spec& spec) noexcept;

/// Exact statistics of the values seen, tracked alongside a histogram. Accumulated, never reset
/// by the kernels. `max_abs_bits` etc. hold fp32 bit patterns so that the GPU can update them
/// with integer atomics; use the accessors.
struct tensor_stats {
  std::uint64_t finite_count = 0;  ///< values that are neither NaN nor +-Inf
  std::uint64_t nan_count = 0;
  std::uint64_t inf_count = 0;
  float max_abs = 0.0f;                                 ///< largest finite |x| (0 when none)
  float min = std::numeric_limits<float>::infinity();   ///< smallest finite x (+inf when none)
  float max = -std::numeric_limits<float>::infinity();  ///< largest finite x (-inf when none)
};

/// Merges the statistics of two disjoint sets of values into `into` (numerics.md 1.4): counts
/// added, max_abs and max by maximum, min by minimum. Exact and commutative.
void merge(tensor_stats& into, const tensor_stats& from) noexcept;

/// Threshold-selection method (docs/numerics.md 2 to 4).
enum class method : std::uint8_t { entropy = 0, max = 1, percentile = 2, mse = 3 };

/// Rule set of the entropy method.
enum class rule_set : std::uint8_t {
  tensorrt = 0,  ///< abs histogram, NVIDIA's entropy calibrator (default)
  mxnet = 1,     ///< signed histogram with odd bins over [-hi, hi], MXNet >= 1.6 / TVM
};

/// What the tensorrt rule set does with bin 0 before searching.
enum class zero_bin_policy : std::uint8_t {
  copy_next = 0,  ///< c[0] := c[1] (suppresses the post-ReLU zero spike; default)
  keep = 1,       ///< use c[0] as counted
};

/// Options of one threshold search. Defaults are the tensorrt preset.
struct search_options {
  method meth = method::entropy;
  rule_set rules = rule_set::tensorrt;
  std::int32_t start_bin = 128;  ///< first candidate (tensorrt entropy and mse)
  std::int32_t stride = 1;       ///< candidate step (tensorrt entropy and mse)
  std::int32_t bits = 8;         ///< 2..16
  bool is_unsigned = false;      ///< levels 2^bits and qmax 2^bits - 1 instead of 2^(bits-1)
  zero_bin_policy zero_bin = zero_bin_policy::copy_next;
  double percentile = 99.99;  ///< percentile method, in [0, 100]

  /// NVIDIA/TensorRT entropy calibration: abs histogram, 128 levels, start_bin 128, stride 1.
  static constexpr search_options tensorrt() noexcept { return search_options{}; }
  /// MXNet/TVM entropy calibration: signed 8001-bin histogram, 255 levels.
  static constexpr search_options mxnet() noexcept {
    search_options o;
    o.rules = rule_set::mxnet;
    return o;
  }
};

/// Checks options against a histogram spec (docs/numerics.md 6): bits, start_bin, stride,
/// percentile, layout and bin-count requirements of the method and rule set.
status validate(const histogram_spec& spec, const search_options& opts) noexcept;

/// Number of candidates the search evaluates (= length of the optional curve); 0 for the
/// percentile and max methods, which have no curve. Precondition: validate(spec, opts).ok().
std::int64_t candidate_count(const histogram_spec& spec, const search_options& opts) noexcept;

/// Largest quantized magnitude: 2^(bits-1) - 1, or 2^bits - 1 when unsigned.
constexpr std::int32_t qmax(const search_options& o) noexcept {
  return o.is_unsigned ? (1 << o.bits) - 1 : (1 << (o.bits - 1)) - 1;
}

/// Per-histogram result of a search (docs/numerics.md 5). `index` is the choice, per method:
/// tensorrt entropy, the candidate's bin count i (amax = i bin widths); mxnet entropy, the
/// half-width i (amax = the right edge of bin bins / 2 + i); percentile, the bin index k (amax =
/// its left edge); mse, the index i of the bin whose centre is amax; max, the bin count. It is 0
/// when the histogram is empty or all zero.
struct search_result {
  double amax = 0.0;              ///< clipping threshold, computed in fp64
  float scale = 0.0f;             ///< float(amax) / qmax, correctly rounded fp32
  std::int32_t index = 0;         ///< the method's choice (bin count, bin or half-width, above)
  double score = 0.0;             ///< KL or MSE at the optimum (0 for max and percentile)
  double clipped_fraction = 0.0;  ///< mass of bins entirely beyond amax, over the total
  bool degenerate = false;        ///< empty, all-zero, or every candidate infinite
};

}  // namespace klcal
