// CPU driver of the low-rank Bradley-Terry ops: splits the rows into one
// chunk per thread, runs the per-user-head kernels of lowrank_bt_body.inc on
// each chunk with a thread-private dV, then reduces the chunks in a fixed order.
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
// summed in index order (a user cut by a chunk boundary too), so the same inputs, thread count and instruction set
// give bitwise-identical outputs whichever OS thread runs which chunk.
#include "lowrank_bt_cpu.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
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

// Where a run's dS goes. With user-sorted rows a run that touches neither end
// of the chunk is its user's only run: its dS is written straight into the
// output; the first and last runs may continue in the neighbouring chunks, so
// they go to per-chunk edge slots that the driver adds in chunk order. With
// unsorted rows every run adds into a chunk-private [n, k] buffer.
template <typename T>
struct DsSink {
  bool sorted;
  T* out;     // sorted: the output dS [n, k] (zeroed); else the private buffer
  T* first;   // [k] dS of the run that starts the chunk (sorted only)
  T* last;    // [k] dS of the run that ends it, when that is another run
  int64_t first_user = -1, last_user = -1;
};

#if LORE_X86_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
namespace avx512 {
constexpr int kVecBytes = 64;
constexpr int kAccRegs = 24;  // of 32 zmm registers (measured: 16 left the products over users load-bound)
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

// Column j's position when bf16 Z is read as pairs (see rows_dot_pairs): in
// each block of 2W columns the even ones come first, then the odd ones.
// pair_w = 0 keeps the natural order.
inline int64_t pair_position(int64_t j, int64_t pair_w) {
  if (pair_w == 0) return j;
  const int64_t r = j % (2 * pair_w);
  return j - r + (r % 2) * pair_w + r / 2;
}

// V [d, k] -> V^T [k, ld], zero-padded, columns in pair order if pair_w > 0.
template <typename T>
std::vector<T> transpose_padded(const T* v, int64_t d, int64_t k, int64_t ld,
                                int64_t pair_w = 0) {
  std::vector<T> vt(size_t(k * ld), T(0));
  for (int64_t j = 0; j < d; ++j) {
    const int64_t p = pair_position(j, pair_w);
    for (int64_t c = 0; c < k; ++c) vt[size_t(c * ld + p)] = v[j * k + c];
  }
  return vt;
}

int float_lanes(int isa) { return isa == kAvx512 ? 16 : (isa == kAvx2 ? 8 : 4); }

// bf16 Z is read as pairs when every row is whole blocks of 2W elements that
// start 4-byte aligned.
template <typename T>
int64_t pair_width(const BtInputs<T>& in, int isa) {
  if (sizeof(T) != 4 || in.z.type != ZType::kBF16) return 0;
  const int64_t w = float_lanes(isa);
  const bool aligned = reinterpret_cast<uintptr_t>(in.z.data) % 4 == 0 && in.z.ldz % 2 == 0;
  return aligned && in.d % (2 * w) == 0 ? w : 0;
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

// Users per group of bt_users: the group's heads H and gradients G take gu
// rows of ld each. Larger groups amortise the passes over V^T and dV^T over
// more users (measured at d = 4096, K = 64, 4 pairs a user: 87 ms with
// 128 KiB each, 65 ms with 512 KiB, no gain beyond); ~512 KiB each.
int64_t group_users(int64_t ld, int64_t elem) {
  const int64_t gu = (512 * 1024) / (ld * elem);
  return gu < 4 ? 4 : (gu > 64 ? 64 : gu);
}

// Scratch of bt_users per chunk, in elements of T (see carve_group).
int64_t group_scratch_elems(int64_t rb, int64_t gu, int64_t ld, int64_t k, int64_t elem) {
  const int64_t per_group = 2 * gu * ld + 3 * gu * k + (gu * k + 1) * (64 / elem);
  return rb * ld + 3 * per_group;  // staged rows, three groups (see bt_users)
}

template <typename T, bool kGrad>
void run_chunks(const BtInputs<T>& in, const BtOutputs<T>& out, int threads) {
  const int isa = select_isa();
  const int64_t d = in.d, k = in.k, n = in.n, elem = int64_t(sizeof(T));
  const int chunks = plan_chunks(in.m, threads);
  const int64_t ld = padded_ld(d, elem);
  const int64_t rb = block_rows(ld, elem);
  const int64_t gu = group_users(ld, elem);
  const int64_t per_chunk = group_scratch_elems(rb, gu, ld, k, elem);
  const int64_t pair_w = pair_width(in, isa);
  const std::vector<T> vt = transpose_padded(in.v, d, k, ld, pair_w);
  std::vector<T> scratch(size_t(chunks * per_chunk));
  std::vector<T> dvt(kGrad ? size_t(chunks * k * ld) : 0, T(0));
  std::vector<T> loss(size_t(chunks), T(0));
  // dS: user-sorted rows write interior users straight into out.ds and keep
  // each chunk's two edge runs apart; unsorted rows need a private [n, k] each.
  std::vector<T> edges(kGrad ? size_t(chunks * 2 * k) : 0, T(0));
  std::vector<T> ds_private(kGrad && !in.sorted ? size_t(chunks * n * k) : 0, T(0));
  std::vector<DsSink<T>> sinks(static_cast<size_t>(chunks));
  if (kGrad) std::memset(static_cast<void*>(out.ds), 0, size_t(n * k) * sizeof(T));
  std::vector<int> tids(size_t(chunks), -1);

#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c) {
    tids[size_t(c)] = thread_id();
    const int64_t r0 = in.m * c / chunks, r1 = in.m * (c + 1) / chunks;
    T* sc = scratch.data() + c * per_chunk;
    T* dvt_c = kGrad ? dvt.data() + c * k * ld : nullptr;
    DsSink<T>& sink = sinks[size_t(c)];
    if (kGrad) {
      sink.sorted = in.sorted;
      sink.out = in.sorted ? out.ds : ds_private.data() + c * n * k;
      sink.first = edges.data() + c * 2 * k;
      sink.last = sink.first + k;
    }
    T* loss_c = &loss[size_t(c)];
#if LORE_X86_MULTIVERSION
    if (isa == kAvx512)
      avx512::bt_users<T, kGrad>(in, vt.data(), ld, r0, r1, rb, gu, pair_w > 0, sc, dvt_c, &sink,
                                 loss_c,
                                 out.margin);
    else if (isa == kAvx2)
      avx2::bt_users<T, kGrad>(in, vt.data(), ld, r0, r1, rb, gu, pair_w > 0, sc, dvt_c, &sink,
                                 loss_c,
                               out.margin);
    else
#endif
      generic::bt_users<T, kGrad>(in, vt.data(), ld, r0, r1, rb, gu, pair_w > 0, sc, dvt_c, &sink,
                                 loss_c,
                                  out.margin);
  }
  record(isa, tids);
  if (!kGrad) return;

  T total = T(0);
  for (int c = 0; c < chunks; ++c) total += loss[size_t(c)];
  *out.loss = total;
#pragma omp parallel for num_threads(chunks) schedule(static)
  for (int64_t j = 0; j < d; ++j) {
    const int64_t p = pair_position(j, pair_w);
    for (int64_t c = 0; c < k; ++c) {
      T s = T(0);
      for (int t = 0; t < chunks; ++t) s += dvt[size_t((t * k + c) * ld + p)];
      out.dv[j * k + c] = s;
    }
  }
  if (in.sorted) {  // edge runs in chunk order: a user cut by chunk boundaries sums its parts
    for (int c = 0; c < chunks; ++c) {
      const DsSink<T>& sink = sinks[size_t(c)];
      if (sink.first_user >= 0)
        for (int64_t i = 0; i < k; ++i) out.ds[sink.first_user * k + i] += sink.first[i];
      if (sink.last_user >= 0)
        for (int64_t i = 0; i < k; ++i) out.ds[sink.last_user * k + i] += sink.last[i];
    }
  } else {
    for (int64_t i = 0; i < n * k; ++i) {
      T s = T(0);
      for (int t = 0; t < chunks; ++t) s += ds_private[size_t(t * n * k + i)];
      out.ds[i] = s;
    }
  }
}

template <typename T>
void lowrank_bt(const BtInputs<T>& in, const BtOutputs<T>& out, int threads) {
  run_chunks<T, true>(in, out, threads);
}

template <typename T>
void lowrank_margin(const BtInputs<T>& in, T* margin, int threads) {
  run_chunks<T, false>(in, BtOutputs<T>{nullptr, margin, nullptr, nullptr}, threads);
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
template void lowrank_margin<float>(const BtInputs<float>&, float*, int);
template void lowrank_margin<double>(const BtInputs<double>&, double*, int);
template void project<float>(ZView, const float*, int64_t, int64_t, int64_t, float*, int);
template void project<double>(ZView, const double*, int64_t, int64_t, int64_t, double*, int);

}  // namespace lore::cpu
