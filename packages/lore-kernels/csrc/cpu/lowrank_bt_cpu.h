// CPU kernels of the low-rank Bradley-Terry op, torch-free (raw pointers), so
// the heavy torch headers stay in the one registration file (lowrank_bt.cpp).
#pragma once

#include <cstdint>

#include "../zview.h"

namespace lore::cpu {

using lore::ZType;
using lore::ZView;

template <typename T>
struct BtInputs {
  ZView z;
  const int64_t* user;  // [m], values in [0, n) (checked by the caller)
  const T* weight;      // [m], the reduction weights c_m
  const T* v;           // [d, k] row-major
  const T* s;           // [n, k] row-major
  int64_t m, d, k, n;
  T tau;
  bool sorted;  // user[] is non-decreasing (the data contract; any order is correct)
  T noise;      // label noise eps of the likelihood (lowrank_bt_row.h); 0: plain BT
};

template <typename T>
struct BtOutputs {
  T* loss;    // scalar
  T* margin;  // [m]
  T* dv;      // [d, k]
  T* ds;      // [n, k]
};

// Loss, margin, dV and dS in one pass over Z on up to `threads` threads, with
// one reward head per run of equal user (see lowrank_bt_body.inc). Bitwise
// deterministic for the same inputs, thread count and instruction set.
template <typename T>
void lowrank_bt(const BtInputs<T>& in, const BtOutputs<T>& out, int threads);

// margin[m] = Z_m . V S_{user_m} through per-user heads (in.weight, in.tau, in.noise unused).
template <typename T>
void lowrank_margin(const BtInputs<T>& in, T* margin, int threads);

// P = Z V, [m, k] row-major.
template <typename T>
void project(ZView z, const T* v, int64_t m, int64_t d, int64_t k, T* p, int threads);

// What the last call on this thread did, for tests: instruction set (0 generic, 1 AVX2,
// 2 AVX-512), row chunks, and distinct OpenMP threads that ran them.
struct LastCall {
  int isa;
  int chunks;
  int threads_seen;
};
LastCall last_call();

}  // namespace lore::cpu
