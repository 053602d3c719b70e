// Progress bar of `klcal calibrate` on stderr (position in the data, pass, rate, ETA).
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "report.hpp"

namespace klcal::cli {

progress_bar::progress_bar(bool enabled, std::uint64_t total, int passes)
    : on_(enabled && total > 0), passes_(std::max(1, passes)), total_(total) {
  t0_ = last_ = clock::now();
}

progress_bar::~progress_bar() {
  finish();
}

void progress_bar::start_pass(int pass) {
  if (pass > 1) first_passes_ = in_pass_;
  in_pass_ = 0;
  pass_ = pass;
}

void progress_bar::next_tensor() {
  data_done_ += in_pass_;
  first_passes_ = 0;
  in_pass_ = 0;
  pass_ = 1;
}

void progress_bar::add(std::uint64_t bytes, const std::string& label) {
  in_pass_ += bytes;
  if (!on_) return;
  auto now = clock::now();
  const std::uint64_t position = data_done_ + in_pass_;
  if (now - last_ < std::chrono::milliseconds(100) && position < total_) return;
  last_ = now;
  double s = std::chrono::duration<double>(now - t0_).count();
  const double work = double(passes_) * double(data_done_) +
                      double(pass_ - 1) * double(first_passes_) + double(in_pass_);
  const double all = double(passes_) * double(total_);
  double rate = s > 0 ? work / s : 0;
  double eta = rate > 0 ? (all - std::min(work, all)) / rate : 0;
  char pass[32] = "";
  if (passes_ > 1) std::snprintf(pass, sizeof pass, "pass %d/%d ", pass_, passes_);
  char buf[256];
  std::snprintf(buf, sizeof buf, "\r%-24.24s %s%5.1f%%  %8.1f / %.1f MiB  %7.1f MiB/s  ETA %4.0fs ",
                label.c_str(), pass, 100.0 * work / all, double(position) / 1048576.0,
                double(total_) / 1048576.0, rate / 1048576.0, eta);
  std::cerr << buf << std::flush;
  shown_ = true;
}

void progress_bar::finish() {
  if (on_ && shown_) std::cerr << "\r" << std::string(100, ' ') << "\r" << std::flush;
  shown_ = false;
}

}  // namespace klcal::cli
