// CUDA kernels of the low-rank Bradley-Terry ops: the per-user-head row pass
// of lowrank_bt / lowrank_margin, and the projection P = Z V.
//
// Design (docs/architecture.md, "The op")
// ------
// The step is written with one reward head per user (rows are sorted by
// user; the registration sorts them when they are not):
//     H = S V^T                 [n, d]   a cuBLAS GEMM in the registration
//     margin_m = z_m . h_u      g_m = dloss/dmargin (lowrank_bt_row.h)
//     G_u = sum_m g_m z_m       [n, d]   this file: one read of Z from HBM
//     dV = G^T S, dS = G V               two cuBLAS GEMMs in the registration
// so Z is read from device memory once and used for ~4 flops per element
// whatever K is; everything that grows with K is a GEMM over users (n << m).
//
// Row pass (bt_rows_kernel). A persistent grid of `blocks` thread blocks;
// block b owns the contiguous rows [m*b/B, m*(b+1)/B) and walks them run by
// run (a run: consecutive rows of one user, found by binary search). Per run
// the block copies h_u into shared memory and zeroes G_u there; per tile of
// kTileRows rows each thread takes 16-byte chunks of columns (or single
// columns when rows are not 16-byte aligned), forms kTileRows partial dot
// products, and the block reduces them in a fixed order (warp shuffles, then
// warps in index order). One thread per row applies the per-row math; then
// every thread adds g_r z_r into G_u for its own columns - no atomics, since
// columns are partitioned between threads. The tile is read twice, the
// second time from L2 (a tile is 8 rows: a few hundred KiB per wave of
// blocks, far below the L2). At the end of a run G_u is written to G[u]
// when the run lies inside the block (its user's only run) or, for the
// first and last run of a block (which may continue in a neighbouring
// block), to the block's two edge slots; add_edges then sums the slots into
// G in block order. Everything is in a fixed order: bitwise deterministic.
//
// Memory: H and G are n x d in the accumulation type besides Z (for 40 pairs
// per user and bf16 Z, 0.1x the bytes of Z each).
//
// Projection (project_kernel): P = Z V for the few-shot path, unchanged from
// the per-row design: 8-row tiles staged in shared memory with streaming
// loads, kChunk columns of V at a time, fixed-order warp reduce-scatter.
//
// No torch headers: the registration is in lowrank_bt_cuda.cpp.
#include <cuda_runtime.h>

#include <cstdint>
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
constexpr int kTileRows = 8;
constexpr int kChunk = 8;  // project: kTileRows * kChunk = 64 = two entries per lane
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
__device__ __forceinline__ float load_z(const Half* p) { return half_to_float(p->bits); }

__host__ __device__ constexpr size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Elements of Z in one 16-byte chunk.
template <typename ZT>
constexpr int kVec = int(16 / sizeof(ZT));

// The kVec elements of a 16-byte chunk of Z, widened to T.
template <typename T, typename ZT>
__device__ __forceinline__ void load_chunk(const ZT* p, T (&out)[kVec<ZT>]) {
  union {
    uint4 raw;
    ZT e[kVec<ZT>];
  } u;
  u.raw = *reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < kVec<ZT>; ++i) out[i] = T(load_z(&u.e[i]));
}

// -- the per-user-head row pass -------------------------------------------------

template <typename T, typename ZT>
struct RowsArgs {
  const ZT* z;
  int64_t ldz;
  const int64_t* user;  // [m], sorted
  const T* weight;      // [m]
  const T* heads;       // H [n, d]
  int64_t m, d;
  T tau;
  T noise;
  bool vec16;           // rows are 16-byte aligned whole chunks
  T* margin;            // [m]
  T* g;                 // G [n, d] (lowrank_bt), zeroed by the caller
  T* edges;             // [2 * blocks, d] G of each block's first and last run
  int64_t* edge_user;   // [2 * blocks], -1 where unused
  T* loss_part;         // [blocks]
};

// Shared memory of bt_rows_kernel, in elements of T.
__host__ __device__ inline size_t rows_smem_bytes(int64_t d, size_t tb) {
  return (2 * size_t(d) + kWarps * kTileRows + 2 * kTileRows) * tb;
}

// First row in [lo, hi) whose user is not u (rows are sorted by user).
__device__ __forceinline__ int64_t run_end(const int64_t* user, int64_t lo, int64_t hi,
                                           int64_t u) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (user[mid] == u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// acc[r] += z_r . h over this thread's columns, for the tile's nrows rows.
template <typename T, typename ZT>
__device__ __forceinline__ void tile_dots(const RowsArgs<T, ZT>& a, int64_t row0, int nrows,
                                          const T* h_s, T (&acc)[kTileRows]) {
  if (a.vec16) {
    constexpr int V = kVec<ZT>;
    for (int64_t c = threadIdx.x; c * V < a.d; c += kThreads) {
      T hv[V];
#pragma unroll
      for (int i = 0; i < V; ++i) hv[i] = h_s[c * V + i];
#pragma unroll
      for (int r = 0; r < kTileRows; ++r) {
        if (r >= nrows) break;
        T zv[V];
        load_chunk<T, ZT>(a.z + (row0 + r) * a.ldz + c * V, zv);
#pragma unroll
        for (int i = 0; i < V; ++i) acc[r] += zv[i] * hv[i];
      }
    }
  } else {
    for (int64_t j = threadIdx.x; j < a.d; j += kThreads) {
      const T hj = h_s[j];
#pragma unroll
      for (int r = 0; r < kTileRows; ++r)
        if (r < nrows) acc[r] += T(load_z(a.z + (row0 + r) * a.ldz + j)) * hj;
    }
  }
}

// G_u += sum_r g_r z_r over this thread's columns (the same columns as tile_dots).
template <typename T, typename ZT>
__device__ __forceinline__ void tile_axpy(const RowsArgs<T, ZT>& a, int64_t row0, int nrows,
                                          const T* g_rows, T* gu_s) {
  if (a.vec16) {
    constexpr int V = kVec<ZT>;
    for (int64_t c = threadIdx.x; c * V < a.d; c += kThreads) {
      T acc[V];
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] = gu_s[c * V + i];
#pragma unroll
      for (int r = 0; r < kTileRows; ++r) {
        if (r >= nrows) break;
        T zv[V];
        load_chunk<T, ZT>(a.z + (row0 + r) * a.ldz + c * V, zv);
        const T gr = g_rows[r];
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] += gr * zv[i];
      }
#pragma unroll
      for (int i = 0; i < V; ++i) gu_s[c * V + i] = acc[i];
    }
  } else {
    for (int64_t j = threadIdx.x; j < a.d; j += kThreads) {
      T acc = gu_s[j];
#pragma unroll
      for (int r = 0; r < kTileRows; ++r)
        if (r < nrows) acc += g_rows[r] * T(load_z(a.z + (row0 + r) * a.ldz + j));
      gu_s[j] = acc;
    }
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

template <typename T, typename ZT, bool kGrad>
__global__ void __launch_bounds__(kThreads) bt_rows_kernel(const RowsArgs<T, ZT> a) {
  LORE_DYNAMIC_SMEM(smem);
  T* h_s = reinterpret_cast<T*>(smem);  // [d] h_u
  T* gu_s = h_s + a.d;                  // [d] G_u
  T* red_s = gu_s + a.d;                // [kWarps, kTileRows]
  T* g_rows = red_s + kWarps * kTileRows;
  T* loss_rows = g_rows + kTileRows;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t d = a.d, b = blockIdx.x;
  const int64_t r0 = a.m * b / gridDim.x, r1 = a.m * (b + 1) / gridDim.x;
  T block_loss = T(0);  // thread 0
  if (kGrad && tid < 2) a.edge_user[2 * b + tid] = -1;

  for (int64_t row = r0; row < r1;) {
    const int64_t u = a.user[row];
    const int64_t end = run_end(a.user, row + 1, r1, u);
    for (int64_t j = tid; j < d; j += kThreads) {
      h_s[j] = a.heads[u * d + j];
      if (kGrad) gu_s[j] = T(0);
    }
    __syncthreads();

    for (int64_t t = row; t < end; t += kTileRows) {
      const int nrows = end - t < kTileRows ? int(end - t) : kTileRows;
      T acc[kTileRows];
#pragma unroll
      for (int r = 0; r < kTileRows; ++r) acc[r] = T(0);
      tile_dots(a, t, nrows, h_s, acc);
#pragma unroll
      for (int r = 0; r < kTileRows; ++r) {
        const T s = warp_sum(acc[r]);
        if (lane == 0) red_s[warp * kTileRows + r] = s;
      }
      __syncthreads();
      if (tid < nrows) {
        T mrg = T(0);
        for (int w = 0; w < kWarps; ++w) mrg += red_s[w * kTileRows + tid];
        a.margin[t + tid] = mrg;
        if (kGrad) {
          const RowTerms<T> terms = row_terms<T>(mrg, a.weight[t + tid], a.tau, a.noise);
          g_rows[tid] = terms.g;
          loss_rows[tid] = terms.loss;
        }
      }
      __syncthreads();
      if (kGrad) {
        if (tid == 0)
          for (int r = 0; r < nrows; ++r) block_loss += loss_rows[r];
        tile_axpy(a, t, nrows, g_rows, gu_s);
      }
      __syncthreads();  // red_s, g_rows and (at the run's end) h_s are reused
    }

    if (kGrad) {
      // A run inside the block is its user's only run: G[u] is ours alone.
      // The first and last runs may continue next door: edge slots.
      const int side = row == r0 ? 0 : (end == r1 ? 1 : -1);
      T* dst = side < 0 ? a.g + u * d : a.edges + (2 * b + side) * d;
      for (int64_t j = tid; j < d; j += kThreads) dst[j] = gu_s[j];
      if (side >= 0 && tid == 0) a.edge_user[2 * b + side] = u;
      __syncthreads();
    }
    row = end;
  }
  if (kGrad && tid == 0) a.loss_part[b] = block_loss;
}

template <typename T>
struct EdgeArgs {
  const T* edges;
  const int64_t* edge_user;
  int64_t count, d;
  T* g;
};

// G[user(e)] += edges[e] for the edge slots in block order (a user cut by
// block boundaries sums its parts in a fixed order). One thread per column.
template <typename T>
__global__ void add_edges(const EdgeArgs<T> a) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < a.d; j += stride)
    for (int64_t e = 0; e < a.count; ++e) {
      const int64_t u = a.edge_user[e];
      if (u >= 0) a.g[u * a.d + j] += a.edges[e * a.d + j];
    }
}

template <typename T>
struct SumArgs {
  const T* part;
  int count;
  T* out;
};

// out = sum of part[0..count) in index order (the loss of the blocks).
template <typename T>
__global__ void sum_in_order(const SumArgs<T> a) {
  if (threadIdx.x != 0) return;
  T sum = T(0);
  for (int i = 0; i < a.count; ++i) sum += a.part[i];
  *a.out = sum;
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
cudaError_t launch_kernel(void (*kernel)(Arg), int grid, size_t smem, cudaStream_t stream,
                          const Arg& arg) {
#ifdef LORE_CUDA_EMULATION
  (void)stream;
  return lore_emulate_launch(kernel, grid, kThreads, smem, arg);
#else
  kernel<<<grid, kThreads, smem, stream>>>(arg);
  return cudaGetLastError();
#endif
}

// Blocks that fit on the device at once with `smem` bytes each, for `kernel`.
template <typename Kernel>
cudaError_t resident_blocks(Kernel kernel, size_t smem, int* blocks) {
  int dev = 0, sms = 0, optin = 0, per_sm = 0;
  LORE_CUDA_TRY(cudaGetDevice(&dev));
  LORE_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  LORE_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem > size_t(optin)) return cudaErrorInvalidValue;  // d too large for shared memory
  LORE_CUDA_TRY(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  LORE_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  *blocks = per_sm * sms;
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

template <typename T, typename ZT, bool kGrad>
cudaError_t plan_rows(const RowsCall<T>& c, Plan* plan) {
  plan->smem_bytes = rows_smem_bytes(c.d, sizeof(T));
  int blocks = 0;
  LORE_CUDA_TRY(resident_blocks(bt_rows_kernel<T, ZT, kGrad>, plan->smem_bytes, &blocks));
  // At least ~32 rows a block: fewer only add edge slots to reduce.
  const int64_t by_rows = (c.m + 31) / 32;
  int64_t b = blocks < by_rows ? blocks : by_rows;
  plan->blocks = int(b < 1 ? 1 : b);
  plan->workspace_bytes =
      kGrad ? round_up(size_t(2 * plan->blocks) * c.d * sizeof(T), 256) +
                  round_up(size_t(2 * plan->blocks) * sizeof(int64_t), 256) +
                  size_t(plan->blocks) * sizeof(T)
            : 0;
  return cudaSuccess;
}

}  // namespace

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
    ra.user = c.user;
    ra.weight = c.weight;
    ra.heads = c.heads;
    ra.m = c.m;
    ra.d = c.d;
    ra.tau = c.tau;
    ra.noise = c.noise;
    ra.vec16 = rows_are_vec16<ZT>(c.z, c.d);
    ra.margin = c.margin;
    if (!c.grad)
      return launch_kernel(bt_rows_kernel<T, ZT, false>, plan.blocks, plan.smem_bytes, stream,
                           ra);
    unsigned char* ws = static_cast<unsigned char*>(workspace);
    const size_t edge_bytes = round_up(size_t(2 * plan.blocks) * c.d * sizeof(T), 256);
    const size_t user_bytes = round_up(size_t(2 * plan.blocks) * sizeof(int64_t), 256);
    ra.g = c.g;
    ra.edges = reinterpret_cast<T*>(ws);
    ra.edge_user = reinterpret_cast<int64_t*>(ws + edge_bytes);
    ra.loss_part = reinterpret_cast<T*>(ws + edge_bytes + user_bytes);
    LORE_CUDA_TRY(
        launch_kernel(bt_rows_kernel<T, ZT, true>, plan.blocks, plan.smem_bytes, stream, ra));
    const EdgeArgs<T> ea{ra.edges, ra.edge_user, 2 * int64_t(plan.blocks), c.d, c.g};
    const int64_t want = (c.d + kThreads - 1) / kThreads;
    LORE_CUDA_TRY(launch_kernel(add_edges<T>, int(want < 1 ? 1 : want), 0, stream, ea));
    const SumArgs<T> sa{ra.loss_part, plan.blocks, c.loss};
    return launch_kernel(sum_in_order<T>, 1, 0, stream, sa);
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
    return launch_kernel(project_kernel<T, ZT>, int(b < 1 ? 1 : b), smem, stream, pa);
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
