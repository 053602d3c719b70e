// Host dispatch of histogram collection: check arguments -> size -> check workspace -> launch ->
// check.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "func_attributes.cuh"
#include "histogram.cuh"
#include "klcal/histogram.hpp"
#include "klcal/internal/cuda_status.hpp"
#include "klcal/internal/gpu_policy.hpp"
#include "klcal/internal/histogram_detail.hpp"

namespace klcal {
namespace detail {
namespace {

// The kernels need no scratch; a non-zero size keeps the size query (d_temp == nullptr) and the
// run distinguishable, as in CUB, and leaves room to add scratch later without an API change.
constexpr std::size_t hist_temp_bytes = 16;

/// The two-phase protocol every entry point shares: true when the call ends here, with *st its
/// status (a size query writes temp_bytes; a workspace below it is workspace_too_small).
bool workspace_phase(const void* d_temp, std::size_t& temp_bytes, status* st) noexcept {
  *st = {};
  if (d_temp == nullptr) {
    temp_bytes = hist_temp_bytes;
    return true;
  }
  if (temp_bytes < hist_temp_bytes) *st = errc::workspace_too_small;
  return !st->ok();
}

constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

bool valid_dtype(dtype t) {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16;
}

/// Device properties the launch shapes depend on (cheap: the runtime caches attributes).
struct device_shape {
  int device = 0;
  int sms = 1;
  int smem_optin = hist_default_smem_bytes;
};

status query_device(device_shape& d) {
  KLCAL_TRY(cudaGetDevice(&d.device));
  const int dev = d.device;
  KLCAL_TRY(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
      optin > 0)
    d.smem_optin = optin;
  else
    (void)cudaGetLastError();
  return {};
}

kernel_bin_params kernel_params_of(const histogram_spec& s) {
  return kernel_bin_params{make_bin_params(s.bins, s.lo, s.hi), s.kind == layout::abs};
}

/// Checks one histogram's arguments (numerics.md 6) in the order both phases use.
status check_task(const void* d_in, dtype t, std::int64_t n, const histogram_spec& spec,
                  const std::uint64_t* d_counts) {
  if (!valid_dtype(t)) return errc::invalid_dtype;
  if (n < 0) return errc::invalid_count;
  KLCAL_CHECK(validate(spec));
  if (n > 0 && (d_in == nullptr || d_counts == nullptr)) return errc::null_pointer;
  return {};
}

/// Shared memory of the per-thread hot-bin and NaN/Inf slots behind the sub-histograms.
constexpr int slot_bytes = hist_slot_words * 4;

/// Number of blocks and contiguous elements per block for one tensor: up to `target_blocks`
/// (its share of a wave), no block with fewer than hist_min_elems_per_block elements, a block
/// that flushes a shared histogram of `flushed_bins` bins gets at least hist_min_elems_per_bin
/// elements per bin (0: no flush, no such limit), and never fewer than a block per
/// hist_max_elems_per_block (the 32-bit counter rule, numerics.md 1.2 rule 6).
void split(std::int64_t n, std::int64_t target_blocks, std::int64_t flushed_bins,
           std::int64_t& blocks, std::int64_t& elems_per_block) {
  std::int64_t b = std::min(ceil_div(n, hist_min_elems_per_block), target_blocks);
  if (flushed_bins > 0) b = std::min(b, n / (hist_min_elems_per_bin * flushed_bins));
  b = std::max({b, ceil_div(n, hist_max_elems_per_block), std::int64_t{1}});
  elems_per_block = ceil_div(n, b);
  // Multiples of 16 elements keep every chunk's start 16-byte aligned when the tensor's is.
  elems_per_block = ceil_div(elems_per_block, 16) * 16;
  blocks = ceil_div(n, elems_per_block);
}

/// Shared sub-histogram copies of a task: as many as fit in hist target shared memory (48 KiB
/// keeps several blocks per SM resident), at least one when the histogram fits in the opt-in
/// limit at all, 0 (global atomics) otherwise.
int copies_for(std::int32_t bins, const device_shape& d) {
  const std::int64_t one = std::int64_t{bins} * 4;
  // Some shared memory stays free for the kernel's static part (the statistics reduction).
  if (one + slot_bytes > d.smem_optin - hist_static_smem_reserve) return 0;
  const std::int64_t fit = (hist_default_smem_bytes - slot_bytes) / one;
  return static_cast<int>(std::clamp<std::int64_t>(fit, 1, hist_max_sub_histograms));
}

/// Dynamic shared memory of a task binned with `copies` sub-histograms (0: none).
int smem_bytes_for(std::int32_t bins, int copies) {
  return copies == 0 ? 0 : copies * bins * 4 + slot_bytes;
}

/// The bin every thread counts in a register: the one that holds 0 (the zero spike).
std::int32_t hot_bin_of(const histogram_spec& s) {
  return zero_bin_index(s.kind, s.bins, s.lo, s.hi);
}

/// Launches tasks[0 .. num) (num <= MaxTasks, n > 0, all of element type T and layout L, all
/// already validated) as one grid of one wave of resident blocks (occupancy for this launch's
/// shared memory, lowered for large histograms by hist_wave_blocks_per_sm), shared among the tasks
/// in proportion to their sizes: a single large tensor is streamed by every SM at once without a
/// tail wave, and a batch of many tensors does not give each of them a whole wave (which would
/// multiply the blocks' zero + flush work by the task count).
template <dtype T, layout L, int MaxTasks, bool WithStats>
status launch_typed(const histogram_task* const* tasks, int num, const device_shape& d,
                    cudaStream_t stream, tensor_stats* d_stats) {
  // Pass 1: shared memory of the launch = the largest per-task requirement; the total size and
  // the size-weighted sum of the bins the blocks flush (tasks on global atomics flush none).
  int smem = 0;
  double total_n = 0.0;
  double flushed = 0.0;
  for (int i = 0; i < num; ++i) {
    const std::int32_t bins = tasks[i]->spec.bins;
    const int copies = copies_for(bins, d);
    smem = std::max(smem, smem_bytes_for(bins, copies));
    total_n += static_cast<double>(tasks[i]->n);
    if (copies > 0) flushed += static_cast<double>(tasks[i]->n) * bins;
  }
  const auto kernel = histogram_block_private_kernel<T, L, MaxTasks, WithStats>;
  // The limit is raised once per device to the most any launch of this kernel uses there
  // (copies_for keeps every launch within smem_optin minus the static reserve).
  if (smem > hist_default_smem_bytes)
    KLCAL_CHECK((raise_dynamic_smem_once<histogram_block_private_kernel<T, L, MaxTasks, WithStats>>(
        d.device, d.smem_optin - hist_static_smem_reserve)));
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, hist_block_threads, smem) !=
          cudaSuccess ||
      per_sm < 1) {
    (void)cudaGetLastError();
    per_sm = hist_blocks_per_sm;
  }
  // One wave of resident blocks, cut for large histograms so that its end-of-block flushes stay
  // within the budget of gpu_policy.hpp (fewer, longer blocks).
  const double wave =
      static_cast<double>(d.sms) * hist_wave_blocks_per_sm(per_sm, flushed / total_n);

  // Pass 2: descriptors and the block prefix.
  hist_launch_params<MaxTasks> p{};
  std::int64_t total_blocks = 0;
  for (int k = 0; k < num; ++k) {
    const histogram_task& t = *tasks[k];
    // Every task uses as many copies as the launch's shared memory (allocated for every block
    // anyway) holds; 0 = global atomics for histograms too large for shared memory.
    const int copies =
        copies_for(t.spec.bins, d) == 0
            ? 0
            : std::min(hist_max_sub_histograms, (smem - slot_bytes) / (t.spec.bins * 4));
    // The task's share of the wave (at least one block; split() adds blocks where the 32-bit
    // counter rule needs them).
    const auto share = static_cast<std::int64_t>(wave * (static_cast<double>(t.n) / total_n));
    std::int64_t blocks = 0, epb = 0;
    split(t.n, std::max<std::int64_t>(share, 1), copies == 0 ? 0 : t.spec.bins, blocks, epb);
    const bin_params bp = make_bin_params(t.spec.bins, t.spec.lo, t.spec.hi);
    p.tasks[k] = hist_task_desc{t.d_in,
                                reinterpret_cast<unsigned long long*>(t.d_counts),
                                d_stats,
                                t.n,
                                epb,
                                bp.lo,
                                bp.scale,
                                t.spec.bins,
                                hot_bin_of(t.spec),
                                copies,
                                0};
    p.block_begin[k] = static_cast<std::int32_t>(total_blocks);
    total_blocks += blocks;
    if (total_blocks > 0x7fffffff) return errc::invalid_count;  // cannot happen: <= 2^31 blocks
  }
  p.num_tasks = num;
  p.block_begin[num] = static_cast<std::int32_t>(total_blocks);
  kernel<<<static_cast<unsigned>(total_blocks), hist_block_threads, smem, stream>>>(p);
  KLCAL_TRY(cudaGetLastError());
  return {};
}

/// The instantiation for element type t and layout k (one per pair: the kernel's loop holds
/// only that type's widening and that layout's formula).
template <int MaxTasks, bool WithStats>
status launch_tasks(const histogram_task* const* tasks, int num, dtype t, layout k,
                    const device_shape& d, cudaStream_t stream, tensor_stats* d_stats = nullptr) {
  const bool abs = k == layout::abs;
  switch (t) {
    case dtype::f32:
      return abs ? launch_typed<dtype::f32, layout::abs, MaxTasks, WithStats>(tasks, num, d, stream,
                                                                              d_stats)
                 : launch_typed<dtype::f32, layout::signed_, MaxTasks, WithStats>(tasks, num, d,
                                                                                  stream, d_stats);
    case dtype::f16:
      return abs ? launch_typed<dtype::f16, layout::abs, MaxTasks, WithStats>(tasks, num, d, stream,
                                                                              d_stats)
                 : launch_typed<dtype::f16, layout::signed_, MaxTasks, WithStats>(tasks, num, d,
                                                                                  stream, d_stats);
    case dtype::bf16:
      return abs ? launch_typed<dtype::bf16, layout::abs, MaxTasks, WithStats>(tasks, num, d,
                                                                               stream, d_stats)
                 : launch_typed<dtype::bf16, layout::signed_, MaxTasks, WithStats>(tasks, num, d,
                                                                                   stream, d_stats);
  }
  return errc::invalid_dtype;
}

}  // namespace

status histogram_naive_accumulate(const void* d_in, dtype t, std::int64_t n,
                                  const histogram_spec& spec, std::uint64_t* d_counts,
                                  cudaStream_t stream) noexcept {
  KLCAL_CHECK(check_task(d_in, t, n, spec, d_counts));
  if (n == 0) return {};
  device_shape d;
  KLCAL_CHECK(query_device(d));
  const kernel_bin_params b = kernel_params_of(spec);
  const unsigned grid = static_cast<unsigned>(
      std::min<std::int64_t>(ceil_div(n, hist_block_threads), std::int64_t{d.sms} * 32));
  auto* out = reinterpret_cast<unsigned long long*>(d_counts);
  switch (t) {
    case dtype::f32:
      histogram_naive_kernel<dtype::f32><<<grid, hist_block_threads, 0, stream>>>(d_in, n, b, out);
      break;
    case dtype::f16:
      histogram_naive_kernel<dtype::f16><<<grid, hist_block_threads, 0, stream>>>(d_in, n, b, out);
      break;
    case dtype::bf16:
      histogram_naive_kernel<dtype::bf16><<<grid, hist_block_threads, 0, stream>>>(d_in, n, b, out);
      break;
  }
  KLCAL_TRY(cudaGetLastError());
  return {};
}

status histogram_stats_accumulate(const void* d_in, dtype t, std::int64_t n,
                                  const histogram_spec& spec, std::uint64_t* d_counts,
                                  tensor_stats* d_stats, cudaStream_t stream) noexcept {
  KLCAL_CHECK(check_task(d_in, t, n, spec, d_counts));
  if (n > 0 && d_stats == nullptr) return errc::null_pointer;
  if (n == 0) return {};
  device_shape d;
  KLCAL_CHECK(query_device(d));
  const histogram_task task{d_in, n, t, spec, d_counts};
  const histogram_task* one = &task;
  return launch_tasks<1, true>(&one, 1, t, spec.kind, d, stream, d_stats);
}

status add_counts(std::uint64_t* d_dst, const std::uint64_t* d_src, std::int64_t n,
                  cudaStream_t stream) noexcept {
  if (n < 0) return errc::invalid_count;
  if (n == 0) return {};
  if (d_dst == nullptr || d_src == nullptr) return errc::null_pointer;
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(ceil_div(n, 256), 4096));
  add_counts_kernel<<<grid, 256, 0, stream>>>(reinterpret_cast<unsigned long long*>(d_dst),
                                              reinterpret_cast<const unsigned long long*>(d_src),
                                              n);
  KLCAL_TRY(cudaGetLastError());
  return {};
}

status merge_stats(tensor_stats* d_dst, const tensor_stats* d_src, cudaStream_t stream) noexcept {
  if (d_dst == nullptr || d_src == nullptr) return errc::null_pointer;
  merge_stats_kernel<<<1, 1, 0, stream>>>(d_dst, d_src);
  KLCAL_TRY(cudaGetLastError());
  return {};
}

status init_stats(tensor_stats* d_stats, cudaStream_t stream) noexcept {
  if (d_stats == nullptr) return errc::null_pointer;
  init_stats_kernel<<<1, 1, 0, stream>>>(d_stats);
  KLCAL_TRY(cudaGetLastError());
  return {};
}

status apply_max_method(search_result* d_result, const tensor_stats* d_stats, std::int32_t qmax,
                        cudaStream_t stream) noexcept {
  if (d_result == nullptr || d_stats == nullptr) return errc::null_pointer;
  if (qmax < 1) return errc::invalid_option;
  apply_max_method_kernel<<<1, 1, 0, stream>>>(d_result, d_stats, qmax);
  KLCAL_TRY(cudaGetLastError());
  return {};
}

}  // namespace detail

using namespace detail;  // NOLINT(google-build-using-namespace): file-local convenience

status tensor_stats_accumulate(void* d_temp, std::size_t& temp_bytes, const void* d_in, dtype t,
                               std::int64_t n, tensor_stats* d_stats,
                               cudaStream_t stream) noexcept {
  if (!valid_dtype(t)) return errc::invalid_dtype;
  if (n < 0) return errc::invalid_count;
  if (n > 0 && (d_in == nullptr || d_stats == nullptr)) return errc::null_pointer;
  if (status st; workspace_phase(d_temp, temp_bytes, &st)) return st;
  if (n == 0) return {};
  device_shape d;
  KLCAL_CHECK(query_device(d));
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, tensor_stats_kernel<dtype::f32>,
                                                    hist_block_threads, 0) != cudaSuccess ||
      per_sm < 1) {
    (void)cudaGetLastError();
    per_sm = hist_blocks_per_sm;
  }
  std::int64_t blocks = 0, epb = 0;
  split(n, std::int64_t{d.sms} * per_sm, 0, blocks, epb);
  const unsigned grid = static_cast<unsigned>(blocks);
  switch (t) {
    case dtype::f32:
      tensor_stats_kernel<dtype::f32>
          <<<grid, hist_block_threads, 0, stream>>>(d_in, n, epb, d_stats);
      break;
    case dtype::f16:
      tensor_stats_kernel<dtype::f16>
          <<<grid, hist_block_threads, 0, stream>>>(d_in, n, epb, d_stats);
      break;
    case dtype::bf16:
      tensor_stats_kernel<dtype::bf16>
          <<<grid, hist_block_threads, 0, stream>>>(d_in, n, epb, d_stats);
      break;
  }
  KLCAL_TRY(cudaGetLastError());
  return {};
}

status histogram_accumulate(void* d_temp, std::size_t& temp_bytes, const void* d_in, dtype t,
                            std::int64_t n, const histogram_spec& spec, std::uint64_t* d_counts,
                            cudaStream_t stream) noexcept {
  KLCAL_CHECK(check_task(d_in, t, n, spec, d_counts));
  if (status st; workspace_phase(d_temp, temp_bytes, &st)) return st;
  if (n == 0) return {};
  device_shape d;
  KLCAL_CHECK(query_device(d));
  const histogram_task task{d_in, n, t, spec, d_counts};
  const histogram_task* one = &task;
  return launch_tasks<1, false>(&one, 1, t, spec.kind, d, stream);
}

status histogram_accumulate_batched(void* d_temp, std::size_t& temp_bytes,
                                    const histogram_task* h_tasks, std::int32_t num_tasks,
                                    cudaStream_t stream) noexcept {
  if (num_tasks < 0) return errc::invalid_count;
  if (num_tasks > 0 && h_tasks == nullptr) return errc::null_pointer;
  for (std::int32_t i = 0; i < num_tasks; ++i) {
    const histogram_task& t = h_tasks[i];
    KLCAL_CHECK(check_task(t.d_in, t.type, t.n, t.spec, t.d_counts));
  }
  if (status st; workspace_phase(d_temp, temp_bytes, &st)) return st;
  if (num_tasks == 0) return {};
  device_shape d;
  KLCAL_CHECK(query_device(d));
  // One launch per element type and layout present (per hist_batch_tasks_per_launch tasks of
  // it), in task order; the tasks of a launch share its wave in proportion to their sizes, so a
  // batch of small tensors is one launch of a wave of blocks. Tasks with n == 0 take no blocks.
  const histogram_task* chunk[hist_batch_tasks_per_launch];
  for (dtype t : {dtype::f32, dtype::f16, dtype::bf16}) {
    for (layout k : {layout::abs, layout::signed_}) {
      int num = 0;
      for (std::int32_t i = 0; i < num_tasks; ++i) {
        const histogram_task& task = h_tasks[i];
        if (task.n == 0 || task.type != t || task.spec.kind != k) continue;
        chunk[num++] = &task;
        if (num == hist_batch_tasks_per_launch) {
          KLCAL_CHECK(
              (launch_tasks<hist_batch_tasks_per_launch, false>(chunk, num, t, k, d, stream)));
          num = 0;
        }
      }
      if (num > 0)
        KLCAL_CHECK(
            (launch_tasks<hist_batch_tasks_per_launch, false>(chunk, num, t, k, d, stream)));
    }
  }
  return {};
}

status histogram_fold_pow2(std::uint64_t* d_counts, std::int32_t bins, std::int32_t doublings,
                           cudaStream_t stream) noexcept {
  if (bins < 2) return errc::too_few_bins;
  if (bins > max_bins) return errc::too_many_bins;
  if ((bins & (bins - 1)) != 0) return errc::bins_not_power_of_two;
  if (doublings < 0) return errc::invalid_count;
  if (d_counts == nullptr) return errc::null_pointer;
  if (doublings == 0) return {};
  int log2 = 0;
  while ((1 << log2) < bins) ++log2;
  // Past log2(bins) doublings everything is in bin 0 already; more change nothing.
  const int d = std::min(doublings, log2);
  histogram_fold_pow2_kernel<<<1, fold_block_threads, 0, stream>>>(
      reinterpret_cast<unsigned long long*>(d_counts), bins, d);
  KLCAL_TRY(cudaGetLastError());
  return {};
}

}  // namespace klcal
