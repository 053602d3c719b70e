// Entry point of the klcal tool: dispatches subcommands and maps every failure to a one-line
// message.
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "cli.hpp"

namespace {

const char* k_usage = R"(usage: klcal <command> [options]

commands:
  calibrate INPUT...          calibrate tensors from .npy/.npz files or directories
  inspect FILE[:member]       ASCII histogram of one tensor (or saved histogram) with each
                              method's threshold
  check --cache F INPUT...    recompute with the brute-force reference and compare scales
  check --json F INPUT...
  search STATE [options]      thresholds from saved histograms (calibrate --save-histograms)
  merge STATE... -o OUT       merge saved histograms exactly (tensors matched by name)
  demo [--out DIR] [--keep]   write a synthetic activation set and calibrate it

'klcal <command> --help' describes each command's options (docs/cli.md has everything).
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace klcal::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << k_usage;
    return args.empty() ? exit_usage : exit_ok;
  }
  if (args[0] == "--version") {
    std::cout << "klcal 0.1.0\n";
    return exit_ok;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "calibrate") return run_calibrate(args);
    if (cmd == "inspect") return run_inspect(args);
    if (cmd == "check") return run_check(args);
    if (cmd == "search") return run_search(args);
    if (cmd == "merge") return run_merge(args);
    if (cmd == "demo") return run_demo(args);
    if (cmd == "bench-histogram") return run_bench_histogram(args);
    std::cerr << "klcal: unknown command '" << cmd << "' (try klcal --help)\n";
    return exit_usage;
  } catch (const usage_error& e) {
    std::cerr << "klcal " << cmd << ": error: " << e.what() << "\n";
    return exit_usage;
  } catch (const klcal::error& e) {
    std::cerr << "klcal " << cmd << ": error: " << e.what() << "\n";
    klcal::errc c = e.code().code;
    if (c == klcal::errc::cuda_error || c == klcal::errc::out_of_memory) return exit_internal;
    if (c == klcal::errc::io_error || c == klcal::errc::format_error) return exit_input;
    return exit_usage;
  } catch (const std::bad_alloc&) {
    std::cerr << "klcal " << cmd << ": error: out of memory\n";
    return exit_internal;
  } catch (const std::exception& e) {
    std::cerr << "klcal " << cmd << ": error: " << e.what() << "\n";
    return exit_internal;
  }
}
