// Inputs of the klcal tool: discovery of .npy/.npz files, validation of files and tensor names,
// natural order, the --names map.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "klcal/formats.hpp"

namespace klcal::cli {

/// One stored array: a .npy file, or one member of an .npz archive.
struct tensor_source {
  std::string file;             ///< path of the .npy or .npz
  std::string member;           ///< zip member file name ("" for .npy)
  formats::zip_member entry{};  ///< its directory entry (reopened without parsing the archive)
  formats::npy_void2 void2 = formats::npy_void2::refuse;  ///< how a '<V2' descr is read
  std::string display() const { return member.empty() ? file : file + ":" + member; }
  /// Opens a chunked reader (throws klcal::error naming the file).
  formats::npy_reader open(std::size_t chunk_bytes = std::size_t{16} << 20) const;
};

/// All batches of one tensor name, in input order.
struct tensor_group {
  std::string name;
  std::vector<tensor_source> sources;
};

/// A file's identity (device and inode): two paths naming one file compare equal.
struct file_id {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator<(const file_id& o) const { return dev != o.dev ? dev < o.dev : ino < o.ino; }
  bool operator==(const file_id& o) const { return dev == o.dev && ino == o.ino; }
};

/// How INPUT arguments are expanded.
struct input_options {
  bool recursive = false;  ///< descend into subdirectories of directory inputs
  formats::npy_void2 void2 = formats::npy_void2::refuse;  ///< --void2: '<V2' descr as bf16
};

/// Expands INPUT arguments (.npy, .npz, directories of them) into tensor groups in order of
/// first appearance; a directory's entries are taken in natural order (natural_less). Refuses,
/// with klcal::error (errc::io_error or errc::format_error) naming the path, before reading
/// any data: missing files, unknown extensions, directories without tensors, anything that is
/// not a regular file (FIFO, device, socket: never opened for reading), a file given twice
/// (same device and inode, also through a directory or a hard link), an archive holding one
/// member name twice, and tensor names refused by check_tensor_name. `files`, when given,
/// receives the identity of
/// every input file (for output_set::refuse_inputs).
std::vector<tensor_group> collect_inputs(const std::vector<std::string>& inputs,
                                         const input_options& opts = {},
                                         std::vector<file_id>* files = nullptr);

/// `s` with every byte below 0x20 and 0x7f written as an escape (\n, \r, \t, \xNN), for
/// messages and tables on a terminal; other bytes (UTF-8 included) are kept.
std::string escaped(const std::string& s);

/// Refuses (errc::format_error) an empty tensor name or one holding a control character (a
/// byte below 0x20 or 0x7f: a newline would add a line to the TensorRT cache), naming it
/// escaped and saying where it came from (`origin`, e.g. "x.npz member 'a.npy'").
void check_tensor_name(const std::string& name, const std::string& origin);

/// Natural order: runs of digits compare as numbers ("layer.2" < "layer.10"), everything else
/// byte by byte; ties (e.g. "a01" vs "a1") are broken byte-wise, so the order is total.
bool natural_less(const std::string& a, const std::string& b);

/// The --names map: dump name (a tensor name of the inputs) -> one or several output names
/// (cache/JSON/CSV/table names), read from a JSON object whose values are a string or an
/// array of strings. Tensors absent from the map keep their name.
class name_map {
 public:
  name_map() = default;
  /// Reads and checks `path` (errc::io_error / errc::format_error naming it): an object, each
  /// value a non-empty string or a non-empty array of them, every output name passing
  /// check_tensor_name.
  explicit name_map(const std::string& path);
  bool empty() const noexcept { return map_.empty(); }
  /// Checks the map against the tensors found (before any work): every key names a tensor of
  /// the inputs, and no two tensors end up with the same output name (errc::format_error).
  void check(const std::vector<tensor_group>& groups) const;
  /// The output names of tensor `dump` (itself when unmapped).
  std::vector<std::string> targets(const std::string& dump) const;

 private:
  std::string path_;
  std::map<std::string, std::vector<std::string>> map_;
};

/// The identity of the file at `path` (errc::io_error naming it when it cannot be stat'ed).
file_id file_id_of(const std::string& path);

/// Reads a whole (small) regular file as text (errc::io_error naming it).
std::string read_text_file(const std::string& path);

}  // namespace klcal::cli
