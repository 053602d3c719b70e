// Shared declarations of the klcal command-line tool: options, inputs, collectors, subcommands.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "klcal/config.hpp"
#include "klcal/formats.hpp"
#include "klcal/state.hpp"
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

// ---- inputs -----------------------------------------------------------------------------------

/// One stored array: a .npy file, or one member of an .npz archive.
struct tensor_source {
  std::string file;             ///< path of the .npy or .npz
  std::string member;           ///< zip member file name ("" for .npy)
  formats::zip_member entry{};  ///< its directory entry (reopened without parsing the archive)
  std::string display() const { return member.empty() ? file : file + ":" + member; }
  /// Opens a chunked reader (throws klcal::error naming the file).
  formats::npy_reader open(std::size_t chunk_bytes = std::size_t{16} << 20) const;
};

/// All batches of one tensor name, in input order.
struct tensor_group {
  std::string name;
  std::vector<tensor_source> sources;
};

/// Expands INPUT arguments (.npy, .npz, directories of them, non-recursive, sorted) into tensor
/// groups in order of first appearance. Throws klcal::error for missing files, unknown
/// extensions and directories without tensors.
std::vector<tensor_group> collect_inputs(const std::vector<std::string>& inputs);

// ---- state collection ---------------------------------------------------------------------------

/// Feeds the chunks of one tensor at a time to a klcal::cpu::calibrator or a klcal::calibrator
/// (GPU) and hands back its state. The tool owns no range policy, merge or device buffer of its
/// own: the calibrators do all of that. Methods throw klcal::error.
class state_collector {
 public:
  virtual ~state_collector() = default;
  /// "cpu" or "gpu (<device name>)", for the JSON settings.
  virtual std::string name() const = 0;
  /// Starts a tensor with an empty two-pass (`kind` layout) or streaming calibrator of `bins`.
  virtual void begin(range_policy policy, std::int32_t bins, layout kind) = 0;
  /// First pass of the two-pass policy: statistics only.
  virtual void add_range(const formats::chunk& c) = 0;
  /// Ends the first pass; throws when the data's range gives no valid histogram.
  virtual void end_range_pass() = 0;
  /// Bins a chunk (second pass of two-pass; the only pass of streaming).
  virtual void add(const formats::chunk& c) = 0;
  /// Waits for the queued work and returns the tensor's state.
  virtual calibrator_state finish() = 0;
};

/// Picks where histograms are collected: "cpu", "gpu" (error without a device), "auto" (GPU
/// when cudaGetDeviceCount finds one, else CPU).
std::unique_ptr<state_collector> make_collector(const std::string& device, int threads);
std::unique_ptr<state_collector> make_cpu_collector(int threads);
#if KLCAL_WITH_CUDA
/// nullptr when no device is present (reason in *why).
std::unique_ptr<state_collector> make_gpu_collector(std::string* why);
#endif

// ---- helpers ----------------------------------------------------------------------------------

const char* method_name(method m);
const char* rules_name(rule_set r);
const char* range_name(range_policy p);
/// Prints a number compactly for tables (%.6g; "inf", "nan").
std::string fmt_g(double v, int digits = 6);
/// Refuses an output path before any work: a directory, an existing file without --force, a
/// missing or read-only directory (klcal::error errc::io_error naming `opt` and the path).
void check_output(const std::string& path, bool force, const std::string& opt);
/// True when the path exists (file, directory or anything else).
bool path_exists(const std::string& p);
/// Prints rows as a table: first column left-aligned, the others right-aligned.
void print_table(const std::vector<std::vector<std::string>>& rows, std::ostream& os);

// ---- subcommands (argv after the subcommand name) ----------------------------------------------

int run_calibrate(const std::vector<std::string>& args);
int run_inspect(const std::vector<std::string>& args);
int run_check(const std::vector<std::string>& args);
int run_demo(const std::vector<std::string>& args);
int run_bench_histogram(const std::vector<std::string>& args);
int run_search(const std::vector<std::string>& args);
int run_merge(const std::vector<std::string>& args);

/// Settings of one calibration run (parsed from the command line; demo fills it directly).
struct calibrate_settings {
  std::vector<std::string> inputs;
  std::vector<method> methods;  ///< first one goes into the cache
  rule_set rules = rule_set::tensorrt;
  bool rules_given = false;  ///< --rules was given (search: else taken from the saved layout)
  std::int32_t bins = -1;    ///< -1: 2048, or 8001 for mxnet
  std::int32_t start_bin = 128;
  std::int32_t stride = 1;
  std::int32_t bits = 8;
  bool is_unsigned = false;
  double percentile = 99.99;
  bool streaming = false;
  int threads = 0;
  std::string device = "auto";
  std::string cache_path, json_path, csv_path, curves_dir;
  std::string save_path;  ///< --save-histograms: the state file of every calibrated tensor
  std::string trt_version = "8601";
  bool force = false;
  bool quiet = false;
};

/// Runs a calibration (validation of settings and outputs first, then the work).
int calibrate(calibrate_settings s);

/// Checks and completes the settings `calibrate` and `search` share (methods deduplicated,
/// entropy by default; --bits, --percentile, --stride, --start-bin, --trt-version): usage_error.
void validate_search_settings(calibrate_settings& s);

class arg_walker;
/// Parses option `a` if it is one of the search and output options that `calibrate` and
/// `search` share (--method, --rules, --start-bin, --stride, --bits, --unsigned, --percentile,
/// --threads, --cache, --json, --csv, --curves, --trt-version, --force, --quiet); false when
/// it is not one of them.
bool parse_search_option(arg_walker& w, const std::string& a, calibrate_settings& s);

/// Exit status after a run in which `failed` of `total` tensors failed (each with its own
/// message already printed): exit_ok, or exit_input with a summary line on stderr.
int report_failures(const std::string& cmd, std::size_t failed, std::size_t total);

}  // namespace klcal::cli
