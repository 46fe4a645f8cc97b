// CUDA kernels of the low-rank Bradley-Terry ops: the per-user-head row pass
// of lowrank_bt / lowrank_margin, and the projection P = Z V.
//
// Design (docs/architecture.md, "The op")
// ------
// The step is written with one reward head per user; the rows are walked in
// user order through the row index of lowrank_bt_index.h (unsorted input is
// read through a permutation, never copied), and only the users present in
// the call have heads and gradients (compact ids c = 0..users-1):
//     H = S[present] V^T         [users, d]  a cuBLAS GEMM in the registration
//     margin_m = z_m . h_c       g_m = dloss/dmargin (lowrank_bt_row.h)
//     G_c = sum_m g_m z_m        [users, d]  this file: one read of Z from HBM
//     dV = G^T S[present], dS[present] = G V   cuBLAS GEMMs in the registration
// so Z is read from device memory once and used for ~4 flops per element
// whatever K is; everything that grows with K is a GEMM over users (n << m).
//
// Row pass (rows_kernel). The m positions (user order) are split evenly
// between `workers`: a warp each when a row is at most 32 x 2 (16-bit Z) or
// 32 x 4 (fp32) chunks of 16 bytes (d <= 512), else a block of 256 threads. A worker
// walks its positions run by run (a run: one user's consecutive positions,
// from `offsets`), with h_c and G_c in registers: each thread owns `Items`
// 16-byte column chunks (a template parameter, so the arrays stay in
// registers) of every row. Per tile of up to TileRows rows of the run the
// thread issues all its loads at once - predicated, zero-filled past the
// tile's rows or the row's end, streaming (evict-first) - into registers,
// forms the tile's partial dot products from them, and the worker reduces
// them in a fixed order (warp shuffles; for a block, then the 8 warps in
// index order through a double-buffered shared array: one barrier a tile).
// Lane r applies the per-row math to row r (weights are loaded with the
// tile), the g values are broadcast by shuffles and G_c is accumulated from
// the same registers: Z is read exactly once. When Z's rows are not 16-byte
// aligned whole chunks (a storage offset, an odd d or row stride) the same
// registers are filled element by element.
//
// At the end of a run G_c goes to G[c] when the user's rows all lie in the
// worker, else to one of the worker's two edge slots (its first and last
// run). merge_edges then writes G[c] = the sum of that user's slots in
// worker order, in parallel over (slot, column) - no zeroing of G, no
// atomics - and sum_tree adds the workers' loss partials in a fixed tree.
// Everything is in a fixed order: for a given grid (which depends on the
// device's SM count and occupancy, and on m) the outputs are bitwise
// reproducible.
//
// Memory: H and G are users x d in the accumulation type (for 40 pairs per
// user and bf16 Z, 0.1x the bytes of Z each), plus 2 x workers edge slots.
//
// Projection (project_kernel): P = Z V for the few-shot path: 8-row tiles
// staged in shared memory with streaming loads, kChunk columns of V at a
// time, fixed-order warp reduce-scatter.
//
// No torch headers: the registration is in lowrank_bt_cuda.cpp.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "../lowrank_bt_row.h"
#include "lowrank_bt_cuda.h"

// Two seams let tests/cuda_emulator run these kernels on CPU fibers: how the
// dynamic shared memory is declared, and how a kernel is launched.
#ifndef LORE_DYNAMIC_SMEM
#define LORE_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace lore::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTileRows = 8;     // project: rows per tile; rows: the most rows in flight
constexpr int kChunk = 8;        // project: kTileRows * kChunk = 64 = two entries per lane
// rows: 16-byte chunks of Z per thread per tile (32 registers in flight); with
// h_c and G_c in registers this keeps every row kernel at <= 128 registers, so
// two blocks (16 warps) share an SM (nvcc -Xptxas -v: no spills in the paths
// used for d = 384 and 4096).
constexpr int kTileChunks = 8;
constexpr int kMinBlocks = 2;
constexpr int kMaxItems = 16;    // rows: chunks per thread and row, at most
constexpr int kMinRowsPerWorker = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Storage tags of 16-bit Z (torch-free: only the bits are needed).
struct Bf16 {
  uint16_t bits;
};
struct Half {
  uint16_t bits;
};

__device__ __forceinline__ float load_z(const float* p) { return *p; }
__device__ __forceinline__ double load_z(const double* p) { return *p; }
__device__ __forceinline__ float load_z(const Bf16* p) { return bf16_to_float(p->bits); }
__device__ __forceinline__ float half_bits_to_float(uint16_t bits) {
#if defined(__CUDA_ARCH__)
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));  // one instruction, exact
  return f;
#else
  return half_to_float(bits);
#endif
}
__device__ __forceinline__ float load_z(const Half* p) { return half_bits_to_float(p->bits); }

__host__ __device__ constexpr size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Elements of Z in one 16-byte chunk.
template <typename ZT>
constexpr int kVec = int(16 / sizeof(ZT));

// -- the per-user-head row pass -------------------------------------------------

template <typename T, typename ZT>
struct RowsArgs {
  const ZT* z;
  int64_t ldz;
  const int64_t* perm;     // [m] or null
  const int64_t* offsets;  // [users + 1]
  int64_t users;
  const T* weight;  // [m], caller order
  const T* heads;   // [users, d]
  int64_t m, d;
  T tau;
  T noise;
  bool vec16;          // rows are 16-byte aligned whole chunks
  T* margin;           // [m], caller order
  T* g;                // [users, d]
  T* edges;            // [2 * workers, d]
  int64_t* edge_user;  // [2 * workers] compact id, -1 where unused
  T* loss_part;        // [workers]
};

// A 16-byte chunk of Z as raw bits, and its elements widened to T.
union Chunk {
  uint4 raw;
  uint16_t h[8];
  float f[4];
  double f64[2];
};

// Element i of a chunk of bf16, widened. On the GPU a volatile shift or mask
// that the compiler re-issues at each use instead of keeping the widened
// values of a whole tile live: the warp path of d = 384 spilled without it
// (the block path spills with it, so it is the warp path's only).
__device__ __forceinline__ float bf16_bits_to_float(const Chunk& c, int i) {
#if defined(__CUDA_ARCH__)
  const unsigned w = i / 2 == 0 ? c.raw.x : i / 2 == 1 ? c.raw.y : i / 2 == 2 ? c.raw.z : c.raw.w;
  unsigned bits;
  if (i % 2 == 0)
    asm volatile("shl.b32 %0, %1, 16;" : "=r"(bits) : "r"(w));
  else
    asm volatile("and.b32 %0, %1, 0xffff0000;" : "=r"(bits) : "r"(w));
  return __uint_as_float(bits);
#else
  return bf16_to_float(c.h[i]);
#endif
}

template <typename T, typename ZT, bool kRewiden = false>
__device__ __forceinline__ T chunk_elem(const Chunk& c, int i) {
  if constexpr (std::is_same_v<ZT, float>)
    return T(c.f[i]);
  else if constexpr (std::is_same_v<ZT, double>)
    return T(c.f64[i]);
  else if constexpr (std::is_same_v<ZT, Bf16>)
    return kRewiden ? T(bf16_bits_to_float(c, i)) : T(bf16_to_float(c.h[i]));
  else
    return T(half_bits_to_float(c.h[i]));
}

// Chunk `item` of a row: one 16-byte streaming load when rows are aligned
// whole chunks, else element by element; zeros past the row's end.
template <typename ZT>
__device__ __forceinline__ Chunk load_item(const ZT* row, int64_t item, int64_t d, bool vec16) {
  constexpr int V = kVec<ZT>;
  Chunk c;
  c.raw = make_uint4(0u, 0u, 0u, 0u);
  if (vec16) {
    c.raw = __ldcs(reinterpret_cast<const uint4*>(row) + item);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int64_t j = item * V + i;
      if (j < d) {
        if constexpr (std::is_same_v<ZT, float>)
          c.f[i] = __ldcs(row + j);
        else if constexpr (std::is_same_v<ZT, double>)
          c.f64[i] = __ldcs(row + j);
        else
          c.h[i] = __ldcs(reinterpret_cast<const unsigned short*>(row) + j);
      }
    }
  }
  return c;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Compact user whose positions contain `pos`: the last c with offsets[c] <= pos.
__device__ __forceinline__ int64_t user_at(const int64_t* offsets, int64_t users, int64_t pos) {
  int64_t lo = 0, hi = users;  // offsets[lo] <= pos < offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= pos)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// Width: threads per worker (32: a warp, kThreads: the block). Items: 16-byte
// chunks per thread and row. TileRows: rows whose loads are in flight at once.
template <typename T, typename ZT, int Width, int Items, int TileRows, bool kGrad>
__global__ void __launch_bounds__(kThreads, kMinBlocks) rows_kernel(const RowsArgs<T, ZT> a) {
  constexpr int V = kVec<ZT>;
  constexpr bool kBlock = Width == kThreads;
  LORE_DYNAMIC_SMEM(smem);
  T* red_s = reinterpret_cast<T*>(smem);  // [2][kWarps][TileRows], block workers only
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int col = kBlock ? tid : lane;  // this thread's index in its worker
  constexpr int kPerBlock = kThreads / Width;
  const int64_t workers = int64_t(gridDim.x) * kPerBlock;
  const int64_t w = int64_t(blockIdx.x) * kPerBlock + (kBlock ? 0 : warp);
  const int64_t r0 = a.m * w / workers, r1 = a.m * (w + 1) / workers;
  const int64_t d = a.d, items = (d + V - 1) / V;
  const bool writer = kBlock ? warp == 0 : true;  // writes margins and sums the loss
  // Slot s of this worker is written (-1 now, the user later) by thread s only.
  if (kGrad && col < 2) a.edge_user[2 * w + col] = -1;
  T loss = T(0);  // of the rows this lane applied the row math to
  int buf = 0;

  int64_t c = r0 < r1 ? user_at(a.offsets, a.users, r0) : 0;
  for (int64_t row = r0; row < r1; ++c) {
    const int64_t ubeg = a.offsets[c], uend = a.offsets[c + 1];
    const int64_t end = uend < r1 ? uend : r1;
    T h[Items][V], gacc[Items][V];
#pragma unroll
    for (int i = 0; i < Items; ++i) {
      const int64_t item = col + int64_t(i) * Width;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const int64_t j = item * V + e;
        h[i][e] = item < items && j < d ? a.heads[c * d + j] : T(0);
        gacc[i][e] = T(0);
      }
    }

    for (int64_t t = row; t < end; t += TileRows) {
      const int nrows = end - t < TileRows ? int(end - t) : TileRows;
      // The tile's loads, all issued before any is used.
      T wt = T(0);
      int64_t mine = -1;  // caller's row of tile row `lane`
      if (lane < nrows) {
        mine = a.perm ? a.perm[t + lane] : t + lane;
        if (kGrad) wt = a.weight[mine];
      }
      Chunk zc[TileRows][Items];
#pragma unroll
      for (int r = 0; r < TileRows; ++r) {
        const int64_t src = r < nrows ? (a.perm ? a.perm[t + r] : t + r) : 0;
        const ZT* zrow = a.z + src * a.ldz;
#pragma unroll
        for (int i = 0; i < Items; ++i) {
          const int64_t item = col + int64_t(i) * Width;
          if (r < nrows && item < items)
            zc[r][i] = load_item(zrow, item, d, a.vec16);
          else
            zc[r][i].raw = make_uint4(0u, 0u, 0u, 0u);
        }
      }
      T acc[TileRows];
#pragma unroll
      for (int r = 0; r < TileRows; ++r) {
        acc[r] = T(0);
#pragma unroll
        for (int i = 0; i < Items; ++i)
#pragma unroll
          for (int e = 0; e < V; ++e) acc[r] += chunk_elem<T, ZT, !kBlock>(zc[r][i], e) * h[i][e];
      }
#pragma unroll
      for (int r = 0; r < TileRows; ++r) acc[r] = warp_sum(acc[r]);
      if constexpr (kBlock) {
        T* red = red_s + buf * kWarps * TileRows;
        if (lane == 0)
#pragma unroll
          for (int r = 0; r < TileRows; ++r) red[warp * TileRows + r] = acc[r];
        __syncthreads();  // the next tile writes the other buffer: one barrier a tile
#pragma unroll
        for (int r = 0; r < TileRows; ++r) {
          T s = T(0);
          for (int v = 0; v < kWarps; ++v) s += red[v * TileRows + r];
          acc[r] = s;
        }
        buf ^= 1;
      }
      // Lane r owns row r of the tile.
      T mrg = acc[0];
#pragma unroll
      for (int r = 1; r < TileRows; ++r)
        if (lane == r) mrg = acc[r];
      T gr = T(0);
      if (lane < nrows) {
        if (writer) a.margin[mine] = mrg;
        if (kGrad) {
          const RowTerms<T> terms = row_terms<T>(mrg, wt, a.tau, a.noise);
          gr = terms.g;
          loss += terms.loss;
        }
      }
      if (kGrad) {
#pragma unroll
        for (int r = 0; r < TileRows; ++r) {
          const T g = __shfl_sync(kFullMask, gr, r);
#pragma unroll
          for (int i = 0; i < Items; ++i)
#pragma unroll
            for (int e = 0; e < V; ++e) gacc[i][e] += g * chunk_elem<T, ZT, !kBlock>(zc[r][i], e);
        }
      }
    }

    if (kGrad) {
      // A user whose rows all lie in this worker is ours alone: G[c] directly.
      // Otherwise this is the worker's first or last run: an edge slot.
      const bool whole = ubeg >= r0 && uend <= r1;
      const int side = row == r0 ? 0 : 1;
      T* dst = whole ? a.g + c * d : a.edges + (2 * w + side) * d;
#pragma unroll
      for (int i = 0; i < Items; ++i) {
        const int64_t item = col + int64_t(i) * Width;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const int64_t j = item * V + e;
          if (item < items && j < d) dst[j] = gacc[i][e];
        }
      }
      if (!whole && col == side) a.edge_user[2 * w + side] = c;
    }
    row = end;
  }
  if (kGrad && writer) {
    const T s = warp_sum(loss);
    if (lane == 0) a.loss_part[w] = s;
  }
}

template <typename T>
struct EdgeArgs {
  const T* edges;
  const int64_t* edge_user;
  int64_t slots, d;
  T* g;
};

// G[c] = the sum of user c's edge slots in worker order, for the users cut by
// worker boundaries: block (x, y) does columns x * blockDim.x.. of the user
// whose first slot is y. Parallel over users and columns, fixed order.
template <typename T>
__global__ void merge_edges(const EdgeArgs<T> a) {
  const int64_t e = blockIdx.y;
  const int64_t u = a.edge_user[e];
  if (u < 0) return;
  int64_t p = e - 1;
  while (p >= 0 && a.edge_user[p] < 0) --p;
  if (p >= 0 && a.edge_user[p] == u) return;  // not the user's first slot
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= a.d) return;
  T sum = T(0);
  for (int64_t q = e; q < a.slots; ++q) {
    const int64_t uq = a.edge_user[q];
    if (uq < 0) continue;
    if (uq != u) break;
    sum += a.edges[q * a.d + j];
  }
  a.g[u * a.d + j] = sum;
}

template <typename T>
struct SumArgs {
  const T* part;
  int64_t count;
  T* out;
};

// out = the sum of part[0..count): each thread adds a strided share in index
// order, then a fixed tree over the block's threads (one block of kThreads).
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_tree(const SumArgs<T> a) {
  LORE_DYNAMIC_SMEM(smem);
  T* s = reinterpret_cast<T*>(smem);
  const int tid = threadIdx.x;
  T v = T(0);
  for (int64_t i = tid; i < a.count; i += kThreads) v += a.part[i];
  s[tid] = v;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o /= 2) {
    if (tid < o) s[tid] += s[tid + o];
    __syncthreads();
  }
  if (tid == 0) *a.out = s[0];
}

// -- the projection P = Z V ----------------------------------------------------

template <typename T, typename ZT>
struct ProjectArgs {
  const ZT* z;
  int64_t ldz;
  const T* vt;  // V^T [k, d]
  int64_t m, d, k;
  int64_t tiles;
  int64_t ds;  // row stride of the shared-memory tile
  bool cache_rows, vec16;
  T* p;  // [m, k]
};

// Offsets (bytes) of project_kernel's dynamic shared memory.
struct ProjectSmem {
  size_t red, tile, total;
};

__host__ __device__ inline ProjectSmem project_smem(int64_t ds, bool cache, size_t tb, size_t zb) {
  ProjectSmem l{};
  l.red = 0;
  l.tile = round_up(kWarps * 64 * tb, 16);
  l.total = l.tile + (cache ? kTileRows * size_t(ds) * zb : 0);
  return l;
}

// One step of the warp reduce-scatter: the live entries v[0, 4*O) halve;
// lanes with bit O set keep the upper half and send the lower one, the others
// the reverse, and each adds what its partner (lane ^ O) sent.
template <int O, typename T>
__device__ __forceinline__ void reduce_scatter_step(T (&v)[64], int lane) {
  constexpr int kHalf = 2 * O;
  const bool upper = (lane & O) != 0;
#pragma unroll
  for (int i = 0; i < kHalf; ++i) {
    const T send = upper ? v[i] : v[i + kHalf];
    const T keep = upper ? v[i + kHalf] : v[i];
    v[i] = keep + __shfl_xor_sync(kFullMask, send, O);
  }
}

// Sums v over the warp and scatters the result: afterwards lane l holds the
// totals of entries 2l and 2l + 1 in v[0], v[1] (62 shuffles instead of the
// 320 of 64 separate reductions). The order of additions is fixed.
template <typename T>
__device__ __forceinline__ void warp_reduce_scatter64(T (&v)[64], int lane) {
  reduce_scatter_step<16>(v, lane);
  reduce_scatter_step<8>(v, lane);
  reduce_scatter_step<4>(v, lane);
  reduce_scatter_step<2>(v, lane);
  reduce_scatter_step<1>(v, lane);
}

template <typename ZT>
__device__ void copy_tile(const ZT* z, int64_t ldz, int64_t row0, int nrows, int64_t d,
                          int64_t ds, bool vec16, ZT* tile) {
  if (vec16) {  // rows start 16-byte aligned and are whole 16-byte vectors
    const int64_t per_row = d * int64_t(sizeof(ZT)) / 16;
    for (int r = 0; r < nrows; ++r) {
      const uint4* src = reinterpret_cast<const uint4*>(z + (row0 + r) * ldz);
      uint4* dst = reinterpret_cast<uint4*>(tile + r * ds);
      for (int64_t c = threadIdx.x; c < per_row; c += kThreads) dst[c] = __ldcs(src + c);
    }
  } else {
    for (int r = 0; r < nrows; ++r)
      for (int64_t j = threadIdx.x; j < d; j += kThreads) tile[r * ds + j] = z[(row0 + r) * ldz + j];
  }
}

// dst[r * k + k0 + c] = Z_r . V[:, k0 + c] for the tile's rows and kChunk
// columns of V, reduced over the block in a fixed order.
template <typename T, typename ZT>
__device__ void forward_chunk(const ZT* src, int64_t ld, int nrows, const T* vt, int64_t d,
                              int64_t k, int64_t k0, T* red, T* dst) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kn = k - k0 < kChunk ? int(k - k0) : kChunk;
  T acc[kTileRows * kChunk];
#pragma unroll
  for (int i = 0; i < kTileRows * kChunk; ++i) acc[i] = T(0);
  for (int64_t j = threadIdx.x; j < d; j += kThreads) {
    T z[kTileRows];
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) z[r] = r < nrows ? T(load_z(src + r * ld + j)) : T(0);
    T v[kChunk];
#pragma unroll
    for (int c = 0; c < kChunk; ++c) v[c] = c < kn ? __ldg(vt + (k0 + c) * d + j) : T(0);
#pragma unroll
    for (int r = 0; r < kTileRows; ++r)
#pragma unroll
      for (int c = 0; c < kChunk; ++c) acc[r * kChunk + c] += z[r] * v[c];
  }
  warp_reduce_scatter64(acc, lane);
  red[warp * 64 + 2 * lane] = acc[0];
  red[warp * 64 + 2 * lane + 1] = acc[1];
  __syncthreads();
  if (threadIdx.x < 64) {
    T sum = T(0);
    for (int w = 0; w < kWarps; ++w) sum += red[w * 64 + threadIdx.x];
    const int r = threadIdx.x / kChunk, c = threadIdx.x % kChunk;
    if (r < nrows && c < kn) dst[r * k + k0 + c] = sum;
  }
  __syncthreads();
}

template <typename T, typename ZT>
__global__ void __launch_bounds__(kThreads) project_kernel(const ProjectArgs<T, ZT> a) {
  LORE_DYNAMIC_SMEM(smem);
  const ProjectSmem lay = project_smem(a.ds, a.cache_rows, sizeof(T), sizeof(ZT));
  T* red_s = reinterpret_cast<T*>(smem + lay.red);
  ZT* tile_s = reinterpret_cast<ZT*>(smem + lay.tile);
  const int64_t t0 = a.tiles * blockIdx.x / gridDim.x;
  const int64_t t1 = a.tiles * (blockIdx.x + 1) / gridDim.x;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row0 = t * kTileRows;
    const int nrows = a.m - row0 < kTileRows ? int(a.m - row0) : kTileRows;
    const ZT* src = a.z + row0 * a.ldz;
    int64_t ld = a.ldz;
    if (a.cache_rows) {
      copy_tile(a.z, a.ldz, row0, nrows, a.d, a.ds, a.vec16, tile_s);
      src = tile_s;
      ld = a.ds;
    }
    __syncthreads();
    // forward_chunk ends with a barrier: the tile may be reused after it.
    for (int64_t k0 = 0; k0 < a.k; k0 += kChunk)
      forward_chunk(src, ld, nrows, a.vt, a.d, a.k, k0, red_s, a.p + row0 * a.k);
  }
}

// -- host side -------------------------------------------------------------------

#define LORE_CUDA_TRY(expr)               \
  do {                                    \
    const cudaError_t err_ = (expr);      \
    if (err_ != cudaSuccess) return err_; \
  } while (0)

template <typename Arg>
cudaError_t launch_kernel(void (*kernel)(Arg), dim3 grid, size_t smem, cudaStream_t stream,
                          const Arg& arg) {
#ifdef LORE_CUDA_EMULATION
  (void)stream;
  return lore_emulate_launch(kernel, grid, kThreads, smem, arg);
#else
  kernel<<<grid, kThreads, smem, stream>>>(arg);
  return cudaGetLastError();
#endif
}

// Blocks of a kernel that fit on the device at once: SMs x blocks per SM,
// queried once per (device, kernel, shared memory) and cached, so a call
// makes no occupancy query or attribute change after the first.
struct Occupancy {
  int sms, per_sm;
};
using OccupancyKey = std::tuple<int, const void*, size_t>;

std::mutex& occupancy_mutex() {
  static std::mutex m;
  return m;
}
std::map<OccupancyKey, Occupancy>& occupancy_cache() {
  static std::map<OccupancyKey, Occupancy> cache;
  return cache;
}

template <typename Arg>
cudaError_t resident_blocks(void (*kernel)(Arg), size_t smem, int* blocks) {
  int dev = 0;
  LORE_CUDA_TRY(cudaGetDevice(&dev));
  const OccupancyKey key{dev, reinterpret_cast<const void*>(kernel), smem};
  {
    const std::lock_guard<std::mutex> lock(occupancy_mutex());
    const auto it = occupancy_cache().find(key);
    if (it != occupancy_cache().end()) {
      *blocks = it->second.sms * it->second.per_sm;
      return cudaSuccess;
    }
  }
  int sms = 0, optin = 0, per_sm = 0;
  LORE_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  LORE_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem > size_t(optin)) return cudaErrorInvalidValue;  // d too large for shared memory
  if (smem > 48 * 1024)
    LORE_CUDA_TRY(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  LORE_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  const std::lock_guard<std::mutex> lock(occupancy_mutex());
  occupancy_cache()[key] = Occupancy{sms, per_sm};
  *blocks = sms * per_sm;
  return cudaSuccess;
}

template <typename ZT>
bool rows_are_vec16(ZView z, int64_t d) {
  const size_t zb = sizeof(ZT);
  return reinterpret_cast<uintptr_t>(z.data) % 16 == 0 && (size_t(z.ldz) * zb) % 16 == 0 &&
         (size_t(d) * zb) % 16 == 0;
}

// Calls f with a null pointer of the storage type of Z, for the valid
// (accumulation type, storage type) pairs.
template <typename T, typename F>
cudaError_t with_ztype(ZType t, F&& f) {
  if constexpr (std::is_same_v<T, double>) {
    if (t == ZType::kF64) return f(static_cast<const double*>(nullptr));
  } else {
    if (t == ZType::kF32) return f(static_cast<const float*>(nullptr));
    if (t == ZType::kBF16) return f(static_cast<const Bf16*>(nullptr));
    if (t == ZType::kF16) return f(static_cast<const Half*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

// The row kernel for a row of `items` 16-byte chunks: a warp per worker while
// a row fits 32 lanes x kWarpItems chunks, else a block; chunks per thread
// rounded up to a power of two (h_c and G_c take 2 x Items x V registers,
// kept <= 64); as many rows in flight as fit kTileChunks chunks per thread.
template <typename T, typename ZT, bool kGrad>
struct RowsKernel {
  using Fn = void (*)(RowsArgs<T, ZT>);
  static constexpr int V = kVec<ZT>;
  // h_c and G_c hold 2 x Items x V values: at most 64 words (fp64: 8 chunks).
  static constexpr int kMaxPerThread =
      std::is_same_v<T, double> ? 8 : (32 / V < kMaxItems ? 32 / V : kMaxItems);
  static constexpr int kWarpItems = V >= 8 ? 2 : 4;  // more would spill (ptxas -v)
  Fn fn = nullptr;
  bool warp = false;
  int items = 0, tile_rows = 0;

  template <int Width, int N>
  void use() {
    constexpr int tr = kTileChunks / N < 1 ? 1 : (kTileChunks / N < kTileRows ? kTileChunks / N : kTileRows);
    fn = rows_kernel<T, ZT, Width, N, tr, kGrad>;
    warp = Width == 32;
    items = N;
    tile_rows = tr;
  }

  template <int Width, int N>
  bool try_items(int64_t row_items) {
    if constexpr (N <= kMaxPerThread && (Width != 32 || N <= kWarpItems)) {
      if (row_items <= int64_t(Width) * N) {
        use<Width, N>();
        return true;
      }
    }
    return false;
  }

  explicit RowsKernel(int64_t row_items) {
    if (row_items <= 32 * kWarpItems) {
      try_items<32, 1>(row_items) || try_items<32, 2>(row_items) ||
          try_items<32, 4>(row_items) || try_items<32, 8>(row_items);
    } else {
      try_items<kThreads, 1>(row_items) || try_items<kThreads, 2>(row_items) ||
          try_items<kThreads, 4>(row_items) ||
          try_items<kThreads, 8>(row_items) || try_items<kThreads, 16>(row_items);
    }
  }
};

template <typename T, typename ZT, bool kGrad>
cudaError_t plan_rows(const RowsCall<T>& c, Plan* plan) {
  const RowsKernel<T, ZT, kGrad> k((c.d + kVec<ZT> - 1) / kVec<ZT>);
  if (k.fn == nullptr) return cudaErrorInvalidValue;  // d beyond the register tiles
  plan->warp_tiles = k.warp;
  plan->items = k.items;
  plan->tile_rows = k.tile_rows;
  plan->smem_bytes = k.warp ? 0 : 2 * kWarps * size_t(k.tile_rows) * sizeof(T);
  int resident = 0;
  LORE_CUDA_TRY(resident_blocks(k.fn, plan->smem_bytes, &resident));
  // At least kMinRowsPerWorker rows a worker: fewer only add edge slots.
  const int64_t per_block = k.warp ? kWarps : 1;
  const int64_t by_rows = (c.m + kMinRowsPerWorker * per_block - 1) / (kMinRowsPerWorker * per_block);
  const int64_t b = resident < by_rows ? resident : by_rows;
  plan->blocks = int(b < 1 ? 1 : b);
  plan->workers = plan->blocks * per_block;
  plan->workspace_bytes =
      kGrad ? round_up(size_t(2 * plan->workers) * c.d * sizeof(T), 256) +
                  round_up(size_t(2 * plan->workers) * sizeof(int64_t), 256) +
                  size_t(plan->workers) * sizeof(T)
            : 0;
  return cudaSuccess;
}

}  // namespace

void clear_plan_cache() {
  const std::lock_guard<std::mutex> lock(occupancy_mutex());
  occupancy_cache().clear();
}

template <typename T>
cudaError_t plan_rows(const RowsCall<T>& c, Plan* plan) {
  return with_ztype<T>(c.z.type, [&](auto tag) {
    using ZT = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return c.grad ? plan_rows<T, ZT, true>(c, plan) : plan_rows<T, ZT, false>(c, plan);
  });
}

template <typename T>
cudaError_t launch_rows(const RowsCall<T>& c, const Plan& plan, void* workspace,
                        cudaStream_t stream) {
  return with_ztype<T>(c.z.type, [&](auto tag) {
    using ZT = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    RowsArgs<T, ZT> ra{};
    ra.z = static_cast<const ZT*>(c.z.data);
    ra.ldz = c.z.ldz;
    ra.perm = c.perm;
    ra.offsets = c.offsets;
    ra.users = c.users;
    ra.weight = c.weight;
    ra.heads = c.heads;
    ra.m = c.m;
    ra.d = c.d;
    ra.tau = c.tau;
    ra.noise = c.noise;
    ra.vec16 = rows_are_vec16<ZT>(c.z, c.d);
    ra.margin = c.margin;
    const int64_t row_items = (c.d + kVec<ZT> - 1) / kVec<ZT>;
    if (!c.grad) {
      const RowsKernel<T, ZT, false> k(row_items);
      if (k.fn == nullptr) return cudaErrorInvalidValue;
      return launch_kernel(k.fn, dim3(unsigned(plan.blocks)), plan.smem_bytes, stream, ra);
    }
    const RowsKernel<T, ZT, true> k(row_items);
    if (k.fn == nullptr) return cudaErrorInvalidValue;
    unsigned char* ws = static_cast<unsigned char*>(workspace);
    const int64_t slots = 2 * plan.workers;
    const size_t edge_bytes = round_up(size_t(slots) * c.d * sizeof(T), 256);
    const size_t user_bytes = round_up(size_t(slots) * sizeof(int64_t), 256);
    ra.g = c.g;
    ra.edges = reinterpret_cast<T*>(ws);
    ra.edge_user = reinterpret_cast<int64_t*>(ws + edge_bytes);
    ra.loss_part = reinterpret_cast<T*>(ws + edge_bytes + user_bytes);
    LORE_CUDA_TRY(launch_kernel(k.fn, dim3(unsigned(plan.blocks)), plan.smem_bytes, stream, ra));
    const EdgeArgs<T> ea{ra.edges, ra.edge_user, slots, c.d, c.g};
    const int64_t column_blocks = (c.d + kThreads - 1) / kThreads;
    const dim3 merge_grid(unsigned(column_blocks < 1 ? 1 : column_blocks), unsigned(slots));
    LORE_CUDA_TRY(launch_kernel(merge_edges<T>, merge_grid, 0, stream, ea));
    const SumArgs<T> sa{ra.loss_part, plan.workers, c.loss};
    return launch_kernel(sum_tree<T>, dim3(1), kThreads * sizeof(T), stream, sa);
  });
}

template <typename T>
cudaError_t launch_project(ZView z, const T* vt, int64_t m, int64_t d, int64_t k, T* p,
                           cudaStream_t stream) {
  return with_ztype<T>(z.type, [&](auto tag) {
    using ZT = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    int dev = 0, optin = 0;
    LORE_CUDA_TRY(cudaGetDevice(&dev));
    LORE_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    ProjectArgs<T, ZT> pa{};
    pa.z = static_cast<const ZT*>(z.data);
    pa.ldz = z.ldz;
    pa.vt = vt;
    pa.m = m;
    pa.d = d;
    pa.k = k;
    pa.tiles = (m + kTileRows - 1) / kTileRows;
    pa.ds = int64_t(round_up(size_t(d), 8));
    pa.cache_rows = project_smem(pa.ds, true, sizeof(T), sizeof(ZT)).total <= size_t(optin);
    pa.vec16 = rows_are_vec16<ZT>(z, d);
    pa.p = p;
    const size_t smem = project_smem(pa.ds, pa.cache_rows, sizeof(T), sizeof(ZT)).total;
    int blocks = 0;
    LORE_CUDA_TRY(resident_blocks(project_kernel<T, ZT>, smem, &blocks));
    const int64_t b = blocks < pa.tiles ? blocks : pa.tiles;
    return launch_kernel(project_kernel<T, ZT>, dim3(unsigned(b < 1 ? 1 : b)), smem, stream, pa);
  });
}

template cudaError_t plan_rows<float>(const RowsCall<float>&, Plan*);
template cudaError_t plan_rows<double>(const RowsCall<double>&, Plan*);
template cudaError_t launch_rows<float>(const RowsCall<float>&, const Plan&, void*, cudaStream_t);
template cudaError_t launch_rows<double>(const RowsCall<double>&, const Plan&, void*,
                                         cudaStream_t);
template cudaError_t launch_project<float>(ZView, const float*, int64_t, int64_t, int64_t, float*,
                                           cudaStream_t);
template cudaError_t launch_project<double>(ZView, const double*, int64_t, int64_t, int64_t,
                                            double*, cudaStream_t);

}  // namespace lore::cuda
