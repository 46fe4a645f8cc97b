// CPU driver of the low-rank Bradley-Terry op: splits the rows into one chunk
// per thread, runs the row-block kernels of lowrank_bt_body.inc on each chunk
// with thread-private dV/dS, then reduces the chunks in a fixed order.
//
// Instruction sets. The extension is built with plain -O3 (no -march), so the
// binary runs on any x86-64. The kernels are compiled three times: for
// AVX-512, for AVX2+FMA (via `#pragma GCC target`) and for the baseline, and
// the best one the CPU supports is picked at run time with
// __builtin_cpu_supports (which also checks that the OS saves the wide
// registers). LORE_CPU_ISA=generic|avx2|avx512 forces a lower one (tests).
// Non-GCC compilers and non-x86 targets get the baseline only.
//
// Determinism. Chunk c owns rows [m*c/C, m*(c+1)/C) with C a function of
// (m, threads) only; each chunk accumulates in row order and the chunks are
// summed in index order, so the same inputs, thread count and instruction set
// give bitwise-identical outputs whichever OS thread runs which chunk.
#include "lowrank_bt_cpu.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../lowrank_bt_row.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LORE_X86_MULTIVERSION 1
#else
#define LORE_X86_MULTIVERSION 0
#endif

namespace lore::cpu {

#if LORE_X86_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
namespace avx512 {
constexpr int kVecBytes = 64;
constexpr int kAccRegs = 16;  // of 32 zmm registers
#include "lowrank_bt_body.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr int kVecBytes = 32;
constexpr int kAccRegs = 8;  // of 16 ymm registers
#include "lowrank_bt_body.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace generic {
constexpr int kVecBytes = 16;
constexpr int kAccRegs = 8;
#include "lowrank_bt_body.inc"
}  // namespace generic

namespace {

enum Isa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

int best_isa() {
#if LORE_X86_MULTIVERSION
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kGeneric;
}

int select_isa() {
  static const int best = best_isa();
  const char* env = std::getenv("LORE_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  const int asked = want == "generic" ? kGeneric
                    : want == "avx2"  ? kAvx2
                    : want == "avx512" ? kAvx512
                                       : -1;
  if (asked < 0)
    throw std::invalid_argument("LORE_CPU_ISA must be generic, avx2 or avx512, got '" + want +
                                "'");
  if (asked > best)
    throw std::invalid_argument("LORE_CPU_ISA=" + want +
                                " but this CPU or build does not support it");
  return asked;
}

thread_local LastCall g_last{kGeneric, 0, 0};  // per calling thread: no races

// Rows per block: a block (as T) should sit in L2 (1-2 MB per core on current
// x86) next to the next block, V and dV, so aim at ~192 KiB, within [4, 64]
// rows, and a multiple of 4 so that the 4-row forward tiles cover it.
int64_t block_rows(int64_t ld, int64_t elem) {
  int64_t rb = (192 * 1024) / (ld * elem);
  rb = rb < 4 ? 4 : (rb > 64 ? 64 : rb);
  return rb - rb % 4;
}

// Row stride of the staged blocks, V^T and dV^T: d rounded up to whole
// 64-byte lines (a multiple of every vector width), and an odd number of
// them so that consecutive rows fall into different L1 sets.
int64_t padded_ld(int64_t d, int64_t elem) {
  int64_t lines = (d * elem + 63) / 64;
  if (lines % 2 == 0) ++lines;
  return lines * 64 / elem;
}

// Scratch per chunk, in elements of T: the staged rows of a block, P and G
// for the block, and 64-byte aligned vector accumulators (see carve()).
int64_t scratch_elems(int64_t rb, int64_t ld, int64_t k, int64_t elem) {
  return rb * ld + 2 * rb * k + (rb * k + 1) * (64 / elem);
}

// Chunks: one per thread, but at least 32 rows each (tiny inputs stay serial).
int plan_chunks(int64_t m, int threads) {
  const int64_t by_rows = (m + 31) / 32;
  int64_t c = threads < by_rows ? threads : by_rows;
  return int(c < 1 ? 1 : c);
}

// V [d, k] -> V^T [k, ld], zero-padded.
template <typename T>
std::vector<T> transpose_padded(const T* v, int64_t d, int64_t k, int64_t ld) {
  std::vector<T> vt(size_t(k * ld), T(0));
  for (int64_t j = 0; j < d; ++j)
    for (int64_t c = 0; c < k; ++c) vt[size_t(c * ld + j)] = v[j * k + c];
  return vt;
}

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

void record(int isa, const std::vector<int>& tids) {
  std::vector<int> seen;
  for (int t : tids) {
    bool dup = false;
    for (int s : seen) dup = dup || s == t;
    if (!dup) seen.push_back(t);
  }
  g_last = LastCall{isa, int(tids.size()), int(seen.size())};
}

}  // namespace

template <typename T>
void lowrank_bt(const BtInputs<T>& in, const BtOutputs<T>& out, int threads) {
  const int isa = select_isa();
  const int64_t d = in.d, k = in.k, n = in.n;
  const int chunks = plan_chunks(in.m, threads);
  const int64_t ld = padded_ld(d, int64_t(sizeof(T)));
  const int64_t rb = block_rows(ld, int64_t(sizeof(T)));
  const int64_t per_chunk = scratch_elems(rb, ld, k, int64_t(sizeof(T)));
  const std::vector<T> vt = transpose_padded(in.v, d, k, ld);
  std::vector<T> dvt(size_t(chunks * k * ld), T(0));
  std::vector<T> ds(size_t(chunks * n * k), T(0));
  std::vector<T> loss(size_t(chunks), T(0));
  std::vector<T> scratch(size_t(chunks * per_chunk));
  std::vector<int> tids(size_t(chunks), -1);

#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c) {
    tids[size_t(c)] = thread_id();
    const int64_t r0 = in.m * c / chunks, r1 = in.m * (c + 1) / chunks;
    T* sc = scratch.data() + c * per_chunk;
    T* dvt_c = dvt.data() + c * k * ld;
    T* ds_c = ds.data() + c * n * k;
    T* loss_c = &loss[size_t(c)];
#if LORE_X86_MULTIVERSION
    if (isa == kAvx512)
      avx512::bt_rows<T>(in, vt.data(), ld, r0, r1, rb, sc, dvt_c, ds_c, loss_c, out.margin);
    else if (isa == kAvx2)
      avx2::bt_rows<T>(in, vt.data(), ld, r0, r1, rb, sc, dvt_c, ds_c, loss_c, out.margin);
    else
#endif
      generic::bt_rows<T>(in, vt.data(), ld, r0, r1, rb, sc, dvt_c, ds_c, loss_c, out.margin);
  }

  T total = T(0);
  for (int c = 0; c < chunks; ++c) total += loss[size_t(c)];
  *out.loss = total;
#pragma omp parallel for num_threads(chunks) schedule(static)
  for (int64_t j = 0; j < d; ++j)
    for (int64_t c = 0; c < k; ++c) {
      T s = T(0);
      for (int t = 0; t < chunks; ++t) s += dvt[size_t((t * k + c) * ld + j)];
      out.dv[j * k + c] = s;
    }
  for (int64_t i = 0; i < n * k; ++i) {
    T s = T(0);
    for (int t = 0; t < chunks; ++t) s += ds[size_t(t * n * k + i)];
    out.ds[i] = s;
  }
  record(isa, tids);
}

template <typename T>
void project(ZView z, const T* v, int64_t m, int64_t d, int64_t k, T* p, int threads) {
  const int isa = select_isa();
  const int chunks = plan_chunks(m, threads);
  const int64_t ld = padded_ld(d, int64_t(sizeof(T)));
  const int64_t rb = block_rows(ld, int64_t(sizeof(T)));
  const int64_t per_chunk = scratch_elems(rb, ld, k, int64_t(sizeof(T)));
  const std::vector<T> vt = transpose_padded(v, d, k, ld);
  std::vector<T> scratch(size_t(chunks * per_chunk));
  std::vector<int> tids(size_t(chunks), -1);

#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c) {
    tids[size_t(c)] = thread_id();
    const int64_t r0 = m * c / chunks, r1 = m * (c + 1) / chunks;
    T* sc = scratch.data() + c * per_chunk;
#if LORE_X86_MULTIVERSION
    if (isa == kAvx512)
      avx512::project_rows<T>(z, vt.data(), d, ld, k, r0, r1, rb, sc, p);
    else if (isa == kAvx2)
      avx2::project_rows<T>(z, vt.data(), d, ld, k, r0, r1, rb, sc, p);
    else
#endif
      generic::project_rows<T>(z, vt.data(), d, ld, k, r0, r1, rb, sc, p);
  }
  record(isa, tids);
}

LastCall last_call() { return g_last; }

template void lowrank_bt<float>(const BtInputs<float>&, const BtOutputs<float>&, int);
template void lowrank_bt<double>(const BtInputs<double>&, const BtOutputs<double>&, int);
template void project<float>(ZView, const float*, int64_t, int64_t, int64_t, float*, int);
template void project<double>(ZView, const double*, int64_t, int64_t, int64_t, double*, int);

}  // namespace lore::cpu
