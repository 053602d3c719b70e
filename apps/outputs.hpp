// Outputs of the klcal tool: every file a command writes is checked before any work and written
// at the end, all together, without ever leaving a target half-written.
#pragma once

#include <string>
#include <vector>

#include "inputs.hpp"

namespace klcal::cli {

/// The outputs of one run. add() checks each target when it is named, before any data is read;
/// stage() and commit() write them at the end:
///  - a regular file (or a new name) is written through formats::staged_file: temporary in the
///    same directory, fsync, rename over the target. Every regular output is staged before any
///    is renamed, so a failing write (disk full, file size limit) leaves every target as it was
///    and removes the temporaries. An existing target needs --force.
///  - "-" is standard output; a character device (/dev/null) or a FIFO (`>(jq .)`) is written
///    directly, without --force (there is nothing to overwrite). These are written after the
///    regular files are staged and before they are renamed.
/// Two outputs naming one file (same path, or same directory and name, or same device and
/// inode), two outputs on standard output, and an output that is one of the input files are
/// refused (errc::io_error), with or without --force.
class output_set {
 public:
  explicit output_set(bool force) : force_(force) {}
  /// Checks and registers `path` for option `opt` ("--cache"); "" is ignored. Refuses a
  /// directory, a socket, an existing file without --force, a missing or unwritable directory,
  /// and a second output naming the same file (errc::io_error naming `opt` and the path).
  void add(const std::string& opt, const std::string& path);
  /// Refuses (errc::io_error) an output that is the same file as one of `inputs`.
  void refuse_inputs(const std::vector<file_id>& inputs) const;
  /// True when some output is standard output (the result table then stays off stdout).
  bool uses_stdout() const noexcept { return stdout_used_; }
  /// Sets the content of the registered output `path` (precondition: add() accepted it).
  void set(const std::string& path, std::string bytes);
  /// Writes every output that has content (see the class comment); throws errc::io_error
  /// naming the output whose write failed.
  void write_all();

 private:
  struct target {
    std::string opt, path;
    bool stream = false;  ///< "-", character device or FIFO: written in place
    file_id id{};         ///< the file (existing) or its directory (new name)
    std::string leaf;     ///< "" for an existing file, else the name inside `id`'s directory
    bool has_content = false;
    std::string bytes;
  };
  bool force_;
  bool stdout_used_ = false;
  std::vector<target> targets_;
};

/// Warns (stderr) when a name written to a TensorRT cache contains ':': ONNX Runtime's reader
/// of native TensorRT tables cuts each line at the first ':' and would misread that entry;
/// klcal's own reader splits at the last ": " (docs/cli.md, TensorRT interop).
void warn_cache_name(const std::string& name);

}  // namespace klcal::cli
