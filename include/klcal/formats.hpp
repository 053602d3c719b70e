// File formats: streaming .npy/.npz readers, .npy/.npz writers, TensorRT calibration cache, JSON.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "klcal/types.hpp"

// Everything here throws klcal::error (errc::io_error or errc::format_error) with a message that
// names the file (and the archive member) and says what was wrong. Nothing reads a whole tensor
// into memory unless its name says so (read_npy_all): the readers yield bounded chunks.
namespace klcal::formats {

// ---- byte sources ----------------------------------------------------------------------------

/// Random-access bytes: a file or a memory buffer. Not thread-safe.
class byte_source {
 public:
  virtual ~byte_source() = default;
  /// Total size in bytes.
  virtual std::uint64_t size() const noexcept = 0;
  /// Copies up to n bytes at `offset` into dst; returns the number copied (< n only at the end).
  /// Throws errc::io_error when the underlying read fails.
  virtual std::size_t read_at(std::uint64_t offset, void* dst, std::size_t n) = 0;
  /// Zero-copy access: a pointer to bytes [offset, offset + n), valid until the next view_at()
  /// or the source's destruction, or nullptr when this source cannot provide one (then use
  /// read_at). Files are memory-mapped window by window, so page-cache data is not copied.
  virtual const void* view_at(std::uint64_t offset, std::size_t n) {
    (void)offset;
    (void)n;
    return nullptr;
  }
  /// The name used in error messages (the file path).
  virtual const std::string& name() const noexcept = 0;
};

/// Opens a regular file for reading (errc::io_error naming `path` when it cannot be opened or
/// is not a regular file: a directory, FIFO, device or socket is refused without reading from
/// it, so a FIFO without a writer never blocks).
std::shared_ptr<byte_source> open_file(const std::string& path);

/// A non-owning view of `n` bytes at `data` (used by tests and fuzzers). `data` must outlive it.
std::shared_ptr<byte_source> memory_source(const void* data, std::size_t n, std::string name);

/// Sequential bytes (a file range, or an inflated zip member).
class byte_stream {
 public:
  virtual ~byte_stream() = default;
  /// Copies up to n bytes into dst; returns fewer than n only at the end of the stream.
  virtual std::size_t read(void* dst, std::size_t n) = 0;
  /// Zero-copy alternative to read(): a pointer to the next n bytes (consumed), valid until the
  /// next call on this stream, or nullptr (nothing consumed) when the stream cannot provide one
  /// or fewer than n bytes remain.
  virtual const void* view(std::size_t n) {
    (void)n;
    return nullptr;
  }
};

// ---- .npy ------------------------------------------------------------------------------------

/// Element type stored in a .npy file. f8 is converted to fp32 on read. bf16 is stored with
/// the 2-byte void descr '<V2' (what NumPy writes for bfloat16 arrays, e.g. from ml_dtypes or
/// torch) and is read only when the caller says so (npy_void2::bf16), never guessed.
enum class npy_dtype : std::uint8_t { f4 = 0, f2 = 1, f8 = 2, bf16 = 3 };

/// How a '<V2' (or '|V2') descr is read: refused (default), or as bfloat16.
enum class npy_void2 : std::uint8_t { refuse = 0, bf16 = 1 };

/// A parsed .npy header.
struct npy_header {
  int version_major = 1;  ///< 1, 2 or 3
  int version_minor = 0;
  npy_dtype stored = npy_dtype::f4;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;  ///< empty for a 0-d array (one element)
  std::int64_t count = 1;           ///< product of shape
  std::uint64_t data_offset = 0;    ///< bytes before the data (magic + length + header)
  /// Bytes per element on disk (4, 2 or 8).
  std::size_t itemsize() const noexcept {
    return stored == npy_dtype::f2 || stored == npy_dtype::bf16 ? 2
           : stored == npy_dtype::f8                            ? 8
                                                                : 4;
  }
  /// Element type of the chunks delivered: f16 for '<f2', bf16 for '<V2' read as bf16, f32 for
  /// '<f4' and '<f8'.
  dtype delivered() const noexcept {
    return stored == npy_dtype::f2     ? dtype::f16
           : stored == npy_dtype::bf16 ? dtype::bf16
                                       : dtype::f32;
  }
};

/// Parses a .npy header from the start of a stream (magic, version, length, dict literal).
/// Accepts versions 1.0, 2.0 and 3.0; dtypes '<f4', '<f2', '<f8'; C order, or Fortran order when
/// at most one dimension exceeds 1. Throws errc::format_error naming `name` otherwise.
/// `void2` says how a 2-byte void descr is read (refused by default, with a message naming
/// the option that accepts it).
npy_header parse_npy_header(byte_stream& in, const std::string& name,
                            npy_void2 void2 = npy_void2::refuse);

/// One chunk of elements, valid until the next call to npy_reader::next.
struct chunk {
  const void* data = nullptr;
  dtype type = dtype::f32;
  std::int64_t n = 0;
};

/// Streams the elements of one .npy payload in bounded chunks. '<f8' is converted to fp32 with
/// round-to-nearest-even (static_cast<float>); finite doubles beyond the fp32 range become +-Inf.
class npy_reader {
 public:
  /// Reads the header from `in`. `payload_size`, when >= 0, is the exact byte size of the whole
  /// .npy (file size or zip member size) and must equal data_offset + count * itemsize.
  /// `chunk_bytes` bounds the memory used (default 4 MiB; the CLI uses 16 MiB). Where the
  /// stream offers zero-copy views (a memory-mapped file), chunks point into the mapping.
  npy_reader(std::unique_ptr<byte_stream> in, std::string name, std::int64_t payload_size = -1,
             std::size_t chunk_bytes = std::size_t{4} << 20, npy_void2 void2 = npy_void2::refuse);
  const npy_header& header() const noexcept { return header_; }
  const std::string& name() const noexcept { return name_; }
  /// Fills `out` with the next chunk; returns false (and out.n == 0) after the last element.
  /// Throws errc::format_error for truncated data or trailing bytes.
  bool next(chunk& out);
  /// Bytes of element data consumed so far (for progress reports).
  std::uint64_t bytes_read() const noexcept { return bytes_read_; }

 private:
  std::unique_ptr<byte_stream> in_;
  std::string name_;
  npy_header header_;
  std::int64_t remaining_ = 0;
  std::size_t chunk_elems_ = 0;
  std::vector<std::uint64_t> raw_;  // uint64 storage keeps every element type aligned
  std::vector<float> converted_;
  std::uint64_t bytes_read_ = 0;
  bool done_ = false;
};

/// A stream over bytes [begin, begin + length) of a source.
std::unique_ptr<byte_stream> range_stream(std::shared_ptr<byte_source> src, std::uint64_t begin,
                                          std::uint64_t length);

/// Opens a .npy file for streaming (size checked against the header).
npy_reader open_npy(const std::string& path, std::size_t chunk_bytes = std::size_t{4} << 20,
                    npy_void2 void2 = npy_void2::refuse);

// ---- .npz ------------------------------------------------------------------------------------

/// One member of a zip archive, from the central directory.
struct zip_member {
  std::string file_name;     ///< as stored, e.g. "conv1.npy"
  std::uint16_t method = 0;  ///< 0 stored, 8 deflate
  std::uint16_t flags = 0;
  std::uint32_t crc32 = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t uncompressed_size = 0;
  std::uint64_t local_header_offset = 0;
};

/// A zip archive (.npz): central directory parsed on construction (zip64 supported).
class npz_archive {
 public:
  /// Throws errc::format_error when `src` is not a zip archive or its directory is malformed.
  explicit npz_archive(std::shared_ptr<byte_source> src);
  /// Adopts members read earlier from the same file without parsing the directory again, so
  /// that a caller can reopen one member of a large archive cheaply without keeping it open.
  npz_archive(std::shared_ptr<byte_source> src, std::vector<zip_member> members)
      : src_(std::move(src)), members_(std::move(members)) {}
  const std::vector<zip_member>& members() const noexcept { return members_; }
  /// The tensor name of a member: its file name without a trailing ".npy".
  static std::string tensor_name(const zip_member& m);
  /// A stream of the member's uncompressed bytes (stored directly, deflate through zlib).
  /// errc::format_error for other compression methods, encryption, bad local headers; the
  /// deflate stream checks its CRC-32 and size at the end.
  std::unique_ptr<byte_stream> open(const zip_member& m) const;
  /// An npy_reader over a member.
  npy_reader open_npy(const zip_member& m, std::size_t chunk_bytes = std::size_t{4} << 20,
                      npy_void2 void2 = npy_void2::refuse) const;
  const std::string& name() const noexcept { return src_->name(); }

 private:
  std::shared_ptr<byte_source> src_;
  std::vector<zip_member> members_;
};

// ---- whole-array helpers and writers (tests, demo) -------------------------------------------

/// Reads all elements of a .npy payload widened to fp32 (f16 exactly, f8 rounded). For tests
/// and small tensors only.
std::vector<float> read_all_f32(npy_reader& r);

/// Serializes an array as a version-1.0 .npy. `data` holds count(shape) elements of `stored`
/// (little-endian float, half bits, bf16 bits (written with the descr '<V2'), or double).
std::string npy_bytes(const void* data, npy_dtype stored, const std::vector<std::int64_t>& shape);

/// Writes bytes to a file (errc::io_error naming `path` on failure).
void write_file(const std::string& path, const std::string& bytes);

/// Replaces `path` with `bytes` atomically: the bytes go to a new temporary file in the same
/// directory ("<path>.tmp.<pid>.<n>", created exclusively with mode 0666 & ~umask), which is
/// flushed with fsync and then renamed over `path`; the directory is then fsync'ed (best
/// effort). Readers see either the old file or the complete new one, never a half-written file.
/// On any failure the temporary is removed, `path` is left as it was, and errc::io_error names
/// `path` and the failing step. Preconditions: the directory of `path` exists and is writable.
/// A symbolic link at `path` is replaced by a regular file (the link's target is not written).
void write_file_atomic(const std::string& path, const std::string& bytes);

/// The two halves of write_file_atomic, for a caller that replaces several files together:
/// the constructor writes `bytes` to the temporary beside `path` and fsyncs it (errc::io_error
/// naming `path`, temporary removed, on failure); commit() renames it over `path` and syncs
/// the directory. Destroying a staged file that was not committed removes the temporary and
/// leaves `path` as it was. Stage every file first, then commit them all: a failing write
/// (disk full) then changes none of the targets. Move-only.
class staged_file {
 public:
  staged_file(const std::string& path, const std::string& bytes);
  ~staged_file();
  staged_file(staged_file&& o) noexcept;
  staged_file(const staged_file&) = delete;
  staged_file& operator=(const staged_file&) = delete;
  staged_file& operator=(staged_file&&) = delete;
  /// Renames the temporary over the target (errc::io_error on failure, temporary removed).
  void commit();
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  std::string temp_;  ///< empty once committed or moved from
};

/// One member to put into an .npz archive.
struct npz_entry {
  std::string file_name;  ///< e.g. "conv1.npy"
  std::string bytes;      ///< the member's content
};

/// Serializes a zip archive with stored (deflate == false) or deflate members.
std::string npz_bytes(const std::vector<npz_entry>& entries, bool deflate);

// ---- TensorRT calibration cache (docs/numerics.md 7) -----------------------------------------

/// Lowercase hex of the fp32 bit pattern, no padding: 1/127 -> "3c010204", +0 -> "0".
std::string scale_hex(float scale);

/// One "<name>: <hex>" line.
struct cache_entry {
  std::string name;
  float scale = 0.0f;
};

/// A calibration cache: header "TRT-<version>-<algorithm>" and entries in file order.
struct calibration_cache {
  std::string version = "8601";  ///< 4 or 6 digits
  std::string algorithm = "EntropyCalibration2";
  std::vector<cache_entry> entries;
};

/// The cache text (trailing newline after every line).
std::string format_cache(const calibration_cache& c);

/// Lenient reader: any run of digits as the version, any algorithm tag, CRLF or LF, blank lines
/// skipped, each line split on the last ": ". errc::format_error naming `name` and the line
/// number for a bad header, a line without ": " or a value that is not 1 to 8 hex digits.
calibration_cache parse_cache(const std::string& text, const std::string& name);

// ---- JSON ------------------------------------------------------------------------------------

/// Escapes a string for JSON (quotes included): ", \, control characters as \uXXXX.
std::string json_string(const std::string& s);

/// A number as JSON: %.17g for finite values (round-trips fp64), `null` for NaN and +-Inf.
std::string json_number(double v);

/// A parsed JSON value (small reader for the files klcal writes).
struct json_value {
  enum class kind : std::uint8_t { null, boolean, number, string, array, object };
  kind type = kind::null;
  bool b = false;
  double num = 0.0;
  std::string str;
  std::vector<json_value> arr;
  std::vector<std::pair<std::string, json_value>> obj;  ///< in file order

  /// Member lookup; nullptr when absent or not an object.
  const json_value* find(const std::string& key) const noexcept;
};

/// Parses JSON text (RFC 8259, nesting up to 256 levels). errc::format_error naming `name`
/// and the byte offset on malformed input.
json_value parse_json(const std::string& text, const std::string& name);

}  // namespace klcal::formats
