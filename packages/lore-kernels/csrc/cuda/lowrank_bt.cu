// Fused CUDA kernels of the low-rank Bradley-Terry op: loss, margin, dV and dS
// in one pass over Z, and the projection P = Z V.
//
// Design
// ------
// Grid. A persistent grid of `blocks` thread blocks (as many as fit on the
// device at once, see plan_impl); block b owns the contiguous row tiles
// [T*b/G, T*(b+1)/G) of T = ceil(M / 8) tiles of kTileRows = 8 rows, so each
// block streams a contiguous slice of Z and meets each user's rows in one run.
//
// Per tile (256 threads, thread t owns the columns j = t, t + 256, ...):
//   1. Load: the tile's rows are copied from global to shared memory with
//      16-byte streaming loads (__ldcs: read once, evict first). This is the
//      only read of Z from device memory. If the tile does not fit in shared
//      memory (very large d), the phases below read Z from global instead.
//   2. Forward: for each group of kChunk = 8 columns of V, each thread forms
//      8 x 8 partial dot products over its columns (V^T read through the
//      read-only cache), then the block reduces them in a fixed order: a warp
//      reduce-scatter (62 shuffles leave lane l with entries 2l, 2l+1) and a
//      sum over the 8 warps in shared memory. P [8, K] stays in shared memory.
//   3. Rows: one thread per row applies the per-row math shared with the CPU
//      kernel (lowrank_bt_row.h): margin, loss term, g. G^T = (g S_u)^T goes
//      to shared memory. dS: in the default mode warp 0 sums g P over each run
//      of consecutive rows of one user and issues one atomicAdd per (run, k),
//      so atomics scale with the number of runs (about users + blocks), not
//      with M; in deterministic mode g P is written per row and the caller
//      reduces it by user with torch's deterministic index_add.
//   4. Backward: each thread adds sum_r G[r, k] Z[r, j] for its columns into
//      the block's private partial dV^T [K, d] in global memory (coalesced,
//      no atomics; the partials are L2-resident for moderate K * d).
// Then reduce_partials sums the per-block partials of dV and of the loss in
// block order. Nothing depends on timing: the same inputs on the same device
// give bitwise-identical loss, margin and dV; dS too in deterministic mode.
//
// Cost model (bf16 Z, per tile of 8 rows): Z 16d bytes from HBM; V^T 4dK and
// the partial dV^T 8dK bytes through L2. For K <= 2 the kernel is HBM-bound;
// for larger K the L2 traffic (0.75 K times the bytes of Z) dominates.
// Keeping V and dV on chip for large K needs d split across a thread-block
// cluster (Hopper distributed shared memory) - the next step once measured.
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
constexpr int kChunk = 8;  // kTileRows * kChunk = 64 = two entries per lane
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

template <typename T, typename ZT>
struct KernelArgs {
  const ZT* z;
  int64_t ldz;
  const int64_t* user;
  const T* weight;
  const T* vt;
  const T* s;
  int64_t m, d, k;
  T tau;
  int64_t tiles;
  int64_t ds;  // row stride of the shared-memory tile
  bool cache_rows, vec16, deterministic;
  T* margin;
  T* dsum;  // dS, default mode
  T* gp;    // g P per row, deterministic mode
  T* p_out;  // project
  T* dv_part;
  T* loss_part;
};

__host__ __device__ constexpr size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Offsets (bytes) of the dynamic shared memory; the same on host and device.
struct SmemLayout {
  size_t p, gt, red, run, g, lt, u, tile, total;
};

__host__ __device__ inline SmemLayout smem_layout(int64_t k, int64_t ds, bool cache, size_t tb,
                                                  size_t zb) {
  SmemLayout l{};
  l.p = 0;
  l.gt = round_up(l.p + kTileRows * k * tb, 16);
  l.red = round_up(l.gt + kTileRows * k * tb, 16);
  l.run = round_up(l.red + kWarps * 64 * tb, 16);
  l.g = round_up(l.run + k * tb, 16);
  l.lt = round_up(l.g + kTileRows * tb, 16);
  l.u = round_up(l.lt + kTileRows * tb, 16);
  l.tile = round_up(l.u + kTileRows * sizeof(int64_t), 16);
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

template <typename T>
__device__ __forceinline__ void flush_run(int64_t user, int64_t k, T* run, T* dsum, int lane) {
  for (int64_t c = lane; c < k; c += 32) {
    atomicAdd(dsum + user * k + c, run[c]);
    run[c] = T(0);
  }
}

template <typename T, typename ZT, bool kProject>
__global__ void __launch_bounds__(kThreads) bt_kernel(const KernelArgs<T, ZT> a) {
  LORE_DYNAMIC_SMEM(smem);
  const SmemLayout lay = smem_layout(a.k, a.ds, a.cache_rows, sizeof(T), sizeof(ZT));
  T* p_s = reinterpret_cast<T*>(smem + lay.p);
  T* gt_s = reinterpret_cast<T*>(smem + lay.gt);
  T* red_s = reinterpret_cast<T*>(smem + lay.red);
  T* run_s = reinterpret_cast<T*>(smem + lay.run);
  T* g_s = reinterpret_cast<T*>(smem + lay.g);
  T* lt_s = reinterpret_cast<T*>(smem + lay.lt);
  int64_t* u_s = reinterpret_cast<int64_t*>(smem + lay.u);
  ZT* tile_s = reinterpret_cast<ZT*>(smem + lay.tile);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t k = a.k, d = a.d;
  const int64_t t0 = a.tiles * blockIdx.x / gridDim.x;
  const int64_t t1 = a.tiles * (blockIdx.x + 1) / gridDim.x;
  T* dvp = kProject ? nullptr : a.dv_part + int64_t(blockIdx.x) * k * d;
  T block_loss = T(0);    // thread 0
  int64_t run_user = -1;  // warp 0, default mode
  if (!kProject)
    for (int64_t c = tid; c < k; c += kThreads) run_s[c] = T(0);

  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row0 = t * kTileRows;
    const int nrows = a.m - row0 < kTileRows ? int(a.m - row0) : kTileRows;
    const ZT* src = a.z + row0 * a.ldz;
    int64_t ld = a.ldz;
    if (a.cache_rows) {
      copy_tile(a.z, a.ldz, row0, nrows, d, a.ds, a.vec16, tile_s);
      src = tile_s;
      ld = a.ds;
    }
    __syncthreads();

    T* dst = kProject ? a.p_out + row0 * k : p_s;
    for (int64_t k0 = 0; k0 < k; k0 += kChunk) forward_chunk(src, ld, nrows, a.vt, d, k, k0, red_s, dst);
    if (kProject) continue;  // forward_chunk ended with a barrier: the tile may be reused

    if (tid < kTileRows) {
      T g = T(0), lt = T(0);
      int64_t u = 0;
      if (tid < nrows) {
        const int64_t row = row0 + tid;
        u = a.user[row];
        const T mrg = row_margin<T>(p_s + tid * k, a.s + u * k, k);
        const RowTerms<T> terms = row_terms<T>(mrg, a.weight[row], a.tau);
        a.margin[row] = mrg;
        g = terms.g;
        lt = terms.loss;
      }
      g_s[tid] = g;
      lt_s[tid] = lt;
      u_s[tid] = u;
    }
    __syncthreads();
    if (tid == 0)
      for (int r = 0; r < nrows; ++r) block_loss += lt_s[r];
    for (int64_t i = tid; i < k * kTileRows; i += kThreads) {
      const int r = int(i % kTileRows);
      gt_s[i] = r < nrows ? g_s[r] * a.s[u_s[r] * k + i / kTileRows] : T(0);
    }
    if (a.deterministic) {
      for (int64_t i = tid; i < nrows * k; i += kThreads) {
        const int64_t r = i / k;
        a.gp[(row0 + r) * k + (i - r * k)] = g_s[r] * p_s[i];
      }
    } else if (warp == 0) {
      for (int r = 0; r < nrows; ++r) {
        if (u_s[r] != run_user) {
          if (run_user >= 0) flush_run(run_user, k, run_s, a.dsum, lane);
          run_user = u_s[r];
        }
        for (int64_t c = lane; c < k; c += 32) run_s[c] += g_s[r] * p_s[r * k + c];
      }
    }
    __syncthreads();

    for (int64_t j = tid; j < d; j += kThreads) {
      T z[kTileRows];
#pragma unroll
      for (int r = 0; r < kTileRows; ++r) z[r] = r < nrows ? T(load_z(src + r * ld + j)) : T(0);
      for (int64_t c = 0; c < k; ++c) {
        const T* gc = gt_s + c * kTileRows;
        T sum = T(0);
#pragma unroll
        for (int r = 0; r < kTileRows; ++r) sum += gc[r] * z[r];
        dvp[c * d + j] += sum;
      }
    }
    __syncthreads();
  }

  if (!kProject) {
    if (!a.deterministic && warp == 0 && run_user >= 0) flush_run(run_user, k, run_s, a.dsum, lane);
    if (tid == 0) a.loss_part[blockIdx.x] = block_loss;
  }
}

template <typename T>
struct ReduceArgs {
  const T* part;  // [blocks, k, d]
  const T* loss_part;
  int blocks;
  int64_t k, d;
  T* dv;  // [d, k]
  T* loss;
};

// dv[j, c] = sum_b part[b, c, j] and loss = sum_b loss_part[b], in block order.
template <typename T>
__global__ void reduce_partials(const ReduceArgs<T> a) {
  const int64_t kd = a.k * a.d;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < kd; e += stride) {
    T sum = T(0);
    for (int b = 0; b < a.blocks; ++b) sum += a.part[b * kd + e];
    const int64_t c = e / a.d;
    a.dv[(e - c * a.d) * a.k + c] = sum;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    T sum = T(0);
    for (int b = 0; b < a.blocks; ++b) sum += a.loss_part[b];
    *a.loss = sum;
  }
}

#define LORE_CUDA_TRY(expr)             \
  do {                                  \
    const cudaError_t err_ = (expr);    \
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

template <typename T, typename ZT, bool kProject>
cudaError_t plan_impl(ZView z, int64_t m, int64_t d, int64_t k, Plan* plan) {
  int dev = 0, sms = 0, optin = 0;
  LORE_CUDA_TRY(cudaGetDevice(&dev));
  LORE_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  LORE_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const int64_t ds = int64_t(round_up(size_t(d), 8));
  const size_t cached = smem_layout(k, ds, true, sizeof(T), sizeof(ZT)).total;
  const size_t uncached = smem_layout(k, ds, false, sizeof(T), sizeof(ZT)).total;
  plan->cache_rows = cached <= size_t(optin);
  plan->smem_bytes = plan->cache_rows ? cached : uncached;
  if (plan->smem_bytes > size_t(optin)) return cudaErrorInvalidValue;  // K too large
  auto kernel = bt_kernel<T, ZT, kProject>;
  LORE_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(plan->smem_bytes)));
  int per_sm = 0;
  LORE_CUDA_TRY(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, plan->smem_bytes));
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  const int64_t tiles = (m + kTileRows - 1) / kTileRows;
  int64_t blocks = int64_t(per_sm) * sms;
  if (!kProject) {  // bound the per-block partials of dV^T to 512 MiB
    const int64_t cap = int64_t(512) * 1024 * 1024 / (k * d * int64_t(sizeof(T)) + 1);
    blocks = blocks < cap ? blocks : cap;
  }
  blocks = blocks < tiles ? blocks : tiles;
  plan->blocks = int(blocks < 1 ? 1 : blocks);
  plan->workspace_bytes =
      kProject ? 0
               : round_up(size_t(plan->blocks) * k * d * sizeof(T), 256) + plan->blocks * sizeof(T);
  (void)z;
  return cudaSuccess;
}

template <typename T, typename ZT>
KernelArgs<T, ZT> kernel_args(ZView z, const T* vt, int64_t m, int64_t d, int64_t k,
                              const Plan& plan) {
  KernelArgs<T, ZT> ka{};
  ka.z = static_cast<const ZT*>(z.data);
  ka.ldz = z.ldz;
  ka.vt = vt;
  ka.m = m;
  ka.d = d;
  ka.k = k;
  ka.tiles = (m + kTileRows - 1) / kTileRows;
  ka.ds = int64_t(round_up(size_t(d), 8));
  ka.cache_rows = plan.cache_rows;
  const size_t zb = sizeof(ZT);
  ka.vec16 = reinterpret_cast<uintptr_t>(z.data) % 16 == 0 && (size_t(z.ldz) * zb) % 16 == 0 &&
             (size_t(d) * zb) % 16 == 0;
  return ka;
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

}  // namespace

template <typename T>
cudaError_t plan_lowrank_bt(const BtArgs<T>& a, Plan* plan) {
  return with_ztype<T>(a.z.type, [&](auto tag) {
    using ZT = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return plan_impl<T, ZT, false>(a.z, a.m, a.d, a.k, plan);
  });
}

template <typename T>
cudaError_t launch_lowrank_bt(const BtArgs<T>& a, const Plan& plan, void* workspace,
                              cudaStream_t stream) {
  return with_ztype<T>(a.z.type, [&](auto tag) {
    using ZT = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    KernelArgs<T, ZT> ka = kernel_args<T, ZT>(a.z, a.vt, a.m, a.d, a.k, plan);
    ka.user = a.user;
    ka.weight = a.weight;
    ka.s = a.s;
    ka.tau = a.tau;
    ka.deterministic = a.deterministic;
    ka.margin = a.margin;
    ka.dsum = a.ds;
    ka.gp = a.gp;
    const size_t part_bytes = size_t(plan.blocks) * a.k * a.d * sizeof(T);
    ka.dv_part = static_cast<T*>(workspace);
    ka.loss_part =
        reinterpret_cast<T*>(static_cast<unsigned char*>(workspace) + round_up(part_bytes, 256));
    LORE_CUDA_TRY(cudaMemsetAsync(ka.dv_part, 0, part_bytes, stream));
    if (!a.deterministic) LORE_CUDA_TRY(cudaMemsetAsync(a.ds, 0, a.n * a.k * sizeof(T), stream));
    LORE_CUDA_TRY(launch_kernel(bt_kernel<T, ZT, false>, plan.blocks, plan.smem_bytes, stream, ka));
    const int64_t want = (a.k * a.d + kThreads - 1) / kThreads;
    const int grid = int(want < 1024 ? (want < 1 ? 1 : want) : 1024);
    const ReduceArgs<T> ra{ka.dv_part, ka.loss_part, plan.blocks, a.k, a.d, a.dv, a.loss};
    return launch_kernel(reduce_partials<T>, grid, 0, stream, ra);
  });
}

template <typename T>
cudaError_t launch_project(ZView z, const T* vt, int64_t m, int64_t d, int64_t k, T* p,
                           cudaStream_t stream) {
  return with_ztype<T>(z.type, [&](auto tag) {
    using ZT = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    Plan plan{};
    LORE_CUDA_TRY((plan_impl<T, ZT, true>(z, m, d, k, &plan)));
    KernelArgs<T, ZT> ka = kernel_args<T, ZT>(z, vt, m, d, k, plan);
    ka.p_out = p;
    return launch_kernel(bt_kernel<T, ZT, true>, plan.blocks, plan.smem_bytes, stream, ka);
  });
}

template cudaError_t plan_lowrank_bt<float>(const BtArgs<float>&, Plan*);
template cudaError_t plan_lowrank_bt<double>(const BtArgs<double>&, Plan*);
template cudaError_t launch_lowrank_bt<float>(const BtArgs<float>&, const Plan&, void*, cudaStream_t);
template cudaError_t launch_lowrank_bt<double>(const BtArgs<double>&, const Plan&, void*,
                                               cudaStream_t);
template cudaError_t launch_project<float>(ZView, const float*, int64_t, int64_t, int64_t, float*,
                                           cudaStream_t);
template cudaError_t launch_project<double>(ZView, const double*, int64_t, int64_t, int64_t,
                                            double*, cudaStream_t);

}  // namespace lore::cuda
