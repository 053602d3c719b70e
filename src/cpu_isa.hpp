// Runtime choice between the AVX2 and the portable scalar code paths of the CPU backend.
#pragma once

#include <cstdlib>
#include <cstring>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KLCAL_CPU_X86 1
#include <cpuid.h>
#include <immintrin.h>
// AVX2 code lives in functions with this attribute and is only called after cpu_use_avx2(), so
// the library builds for (and runs on) any x86-64; everything else targets the baseline ISA.
#define KLCAL_AVX2 __attribute__((target("avx2,f16c,popcnt")))
#else
#define KLCAL_CPU_X86 0
#endif

namespace klcal::cpu::detail {

/// True when the AVX2 paths may run: the CPU has AVX2, F16C and POPCNT, and the environment
/// variable KLCAL_CPU_ISA is not "scalar" (which lets the tests run the portable paths on any
/// machine; both paths give identical histograms, and searches within docs/testing.md).
/// Decided once per process.
inline bool cpu_use_avx2() noexcept {
#if KLCAL_CPU_X86
  static const bool ok = [] {
    const char* isa = std::getenv("KLCAL_CPU_ISA");
    if (isa != nullptr && std::strcmp(isa, "scalar") == 0) return false;
    __builtin_cpu_init();
    // __builtin_cpu_supports("avx2") also checks that the OS saves the YMM registers. F16C is
    // read from CPUID leaf 1 (ECX bit 29) because clang's builtin does not know "f16c".
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && f16c;
  }();
  return ok;
#else
  return false;
#endif
}

}  // namespace klcal::cpu::detail
