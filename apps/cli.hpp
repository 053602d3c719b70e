// Shared declarations of the klcal command-line tool: options, inputs, backends, subcommands.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "inputs.hpp"
#include "klcal/config.hpp"
#include "klcal/formats.hpp"
#include "klcal/types.hpp"

namespace klcal::cli {

/// Exit codes (docs/cli.md).
enum exit_code : int {
  exit_ok = 0,
  exit_check_failed = 1,  ///< `check`: some tensor's stored scale disagrees, or is missing
  exit_usage = 2,         ///< unknown option, bad option value, missing argument
  exit_input = 3,         ///< unreadable or malformed input, existing output without --force
  exit_internal = 4,      ///< backend failure (CUDA error, out of memory)
};

/// A usage error (exit code 2): unknown option or nonsense value.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Prints "klcal: warning: ..." on stderr.
void warn(const std::string& msg);

// ---- backends -------------------------------------------------------------------------------

enum class device_kind { cpu, gpu };

/// Where histograms and searches run. Methods throw klcal::error on failure.
class backend {
 public:
  virtual ~backend() = default;
  virtual std::string name() const = 0;
  /// Accumulates statistics of a chunk into *stats.
  virtual void stats(const formats::chunk& c, tensor_stats* stats) = 0;
  /// Zeroes the counts and sets the spec for following histogram() calls.
  virtual void begin(const histogram_spec& spec) = 0;
  /// Adds a chunk to the counts. `same_as_last_stats`: the chunk is the one just passed to
  /// stats() (a GPU backend then reuses its device copy).
  virtual void histogram(const formats::chunk& c, bool same_as_last_stats) = 0;
  /// Streaming range policy: doubles hi `doublings` times.
  virtual void fold(std::int32_t doublings) = 0;
  /// Current counts (copied to the host).
  virtual std::vector<std::uint64_t> counts() = 0;
  /// Searches the current counts with each options set; curves[k] is filled when want_curves.
  virtual void search(const histogram_spec& spec, float max_abs,
                      const std::vector<search_options>& opts, bool want_curves,
                      std::vector<search_result>& results,
                      std::vector<std::vector<double>>& curves) = 0;
};

/// Picks the backend: "cpu", "gpu" (error without a device), "auto" (GPU when
/// cudaGetDeviceCount finds one, else CPU).
std::unique_ptr<backend> make_backend(const std::string& device, int threads);
std::unique_ptr<backend> make_cpu_backend(int threads);
#if KLCAL_WITH_CUDA
/// nullptr when no device is present (reason in *why).
std::unique_ptr<backend> make_gpu_backend(std::string* why);
#endif

// ---- helpers ----------------------------------------------------------------------------------

const char* method_name(method m);
const char* rules_name(rule_set r);
/// The two-pass histogram range of docs/numerics.md 1.5: hi = max(max_abs, 2^-64), the floor
/// keeping all-zero data and subnormal maxima valid (finite fp32 bin scale); [-hi, hi) in the
/// signed (mxnet) layout, [0, hi) in the abs layout. The spec is not validated here.
histogram_spec two_pass_spec(float max_abs, std::int32_t bins, bool signed_layout);
/// Prints a number compactly for tables (%.6g; "inf", "nan").
std::string fmt_g(double v, int digits = 6);
/// True when the path exists (file, directory or anything else).
bool path_exists(const std::string& p);
/// Prints rows as a table: first column left-aligned, the others right-aligned; control
/// characters in cells are escaped (escaped()).
void print_table(const std::vector<std::vector<std::string>>& rows, std::ostream& os);

// ---- subcommands (argv after the subcommand name) ----------------------------------------------

int run_calibrate(const std::vector<std::string>& args);
int run_inspect(const std::vector<std::string>& args);
int run_check(const std::vector<std::string>& args);
int run_demo(const std::vector<std::string>& args);
int run_bench_histogram(const std::vector<std::string>& args);

/// Settings of one calibration run (parsed from the command line; demo fills it directly).
struct calibrate_settings {
  std::vector<std::string> inputs;
  std::vector<method> methods;  ///< first one goes into the cache
  rule_set rules = rule_set::tensorrt;
  std::int32_t bins = -1;  ///< -1: 2048, or 8001 for mxnet
  std::int32_t start_bin = 128;
  std::int32_t stride = 1;
  std::int32_t bits = 8;
  bool is_unsigned = false;
  double percentile = 99.99;
  bool streaming = false;
  int threads = 0;
  std::string device = "auto";
  std::string cache_path, json_path, csv_path, curves_dir;
  std::string trt_version = "8601";
  bool force = false;
  bool quiet = false;
  bool recursive = false;  ///< --recursive: descend into subdirectories of directory inputs
  std::string names_path;  ///< --names: JSON map of dump names to output names
};

/// Runs a calibration (validation of settings and outputs first, then the work).
int calibrate(calibrate_settings s);

}  // namespace klcal::cli
