// Function multi-versioning for the hot loops, with no other dependency (the
// pure kernel headers use it without pybind11).
//
// Hot loops marked DIALS_DIFFUSE_CLONES are compiled for AVX-512, AVX2 and the
// x86-64 baseline, and the best is chosen at load time (GCC function
// multi-versioning on Linux); elsewhere they are compiled once for the
// build's target. Floating-point results are the same IEEE arithmetic in
// every clone (no FMA contraction under -std=c++17), so they do not depend on
// the CPU.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DIALS_DIFFUSE_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DIALS_DIFFUSE_CLONES
#endif
