// Progress bar of `klcal calibrate` on stderr (bytes done, rate, ETA).
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "report.hpp"

namespace klcal::cli {

progress_bar::progress_bar(bool enabled, std::uint64_t total)
    : on_(enabled && total > 0), total_(total) {
  t0_ = last_ = clock::now();
}

progress_bar::~progress_bar() {
  finish();
}

void progress_bar::add(std::uint64_t bytes, const std::string& label) {
  done_ += bytes;
  if (!on_) return;
  auto now = clock::now();
  if (now - last_ < std::chrono::milliseconds(100) && done_ < total_) return;
  last_ = now;
  double s = std::chrono::duration<double>(now - t0_).count();
  const auto done = static_cast<double>(done_);
  const auto total = static_cast<double>(total_);
  double rate = s > 0 ? done / s : 0;
  double eta = rate > 0 ? (total - std::min(done, total)) / rate : 0;
  char buf[256];
  std::snprintf(buf, sizeof buf, "\r%-24.24s %5.1f%%  %8.1f / %.1f MiB  %7.1f MiB/s  ETA %4.0fs ",
                label.c_str(), 100.0 * done / total, done / 1048576.0, total / 1048576.0,
                rate / 1048576.0, eta);
  std::cerr << buf << std::flush;
  shown_ = true;
}

void progress_bar::finish() {
  if (on_ && shown_) std::cerr << "\r" << std::string(100, ' ') << "\r" << std::flush;
  shown_ = false;
}

}  // namespace klcal::cli
