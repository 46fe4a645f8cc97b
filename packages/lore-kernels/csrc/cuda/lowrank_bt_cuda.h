// Launch interface of the CUDA kernels: raw pointers, a stream, cudaError_t.
// No torch here, so every .cu compiles on its own with nvcc (CI compile check);
// lowrank_bt_cuda.cpp does the torch registration.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../zview.h"

namespace lore::cuda {

// T is the accumulation/output type: double when Z is fp64, else float.
// One call of the row pass of lowrank_bt (grad) or lowrank_margin (!grad).
// The rows are walked in user order through the row index of
// lowrank_bt_index.h (built once per user tensor by the registration): the
// users present in the call are numbered 0..users-1 (compact ids), and
// H = S[present] V^T before the pass and dV = G^T S[present],
// dS[present] = G V after it are the caller's GEMMs (see lowrank_bt.cu).
template <typename T>
struct RowsCall {
  ZView z;                 // [m, d], unit column stride, rows in the caller's order
  const int64_t* perm;     // [m] position in user order -> row of Z; null if already sorted
  const int64_t* offsets;  // [users + 1] compact user c owns positions [offsets[c], offsets[c+1])
  int64_t users;           // users with rows in the call (each owns >= 1 row)
  const T* weight;         // [m] in the caller's row order (grad only)
  const T* heads;          // H [users, d], compact ids
  int64_t m, d;
  T tau;
  T noise;  // label noise of the likelihood (grad only; lowrank_bt_row.h)
  bool grad;
  T* margin;  // [m] in the caller's row order
  T* g;       // G [users, d] (grad only); any content on entry, every row is written
  T* loss;    // scalar (grad only)
};

// Grid and memory of one call. The grid depends on the device (SM count and
// occupancy) and on m: outputs are bitwise reproducible for a given device
// and shape, not across devices.
struct Plan {
  int blocks;              // thread blocks of the row pass
  int64_t workers;         // independent row ranges: a block (256 threads) or a warp each
  int tile_rows;           // rows whose loads are in flight together
  int items;               // 16-byte column chunks per thread and row
  bool warp_tiles;         // a warp per worker (small d) rather than a block
  size_t smem_bytes;       // dynamic shared memory per block
  size_t workspace_bytes;  // edge slots and loss partials, for launch_rows
};

// cudaErrorInvalidValue when d is beyond the kernel's register tiles: 256
// threads x 4 (16-bit Z) or 8 (fp32, fp64) 16-byte chunks, i.e. d <= 8192
// (fp64: 4096).
template <typename T>
cudaError_t plan_rows(const RowsCall<T>& call, Plan* plan);

// Needs `workspace` of plan.workspace_bytes (any content). Deterministic.
template <typename T>
cudaError_t launch_rows(const RowsCall<T>& call, const Plan& plan, void* workspace,
                        cudaStream_t stream);

// The occupancy part of the plan is cached per (device, kernel); tests that
// change the (emulated) device forget it with this.
void clear_plan_cache();

// P = Z V, [m, k] row-major; vt = V^T [k, d].
template <typename T>
cudaError_t launch_project(ZView z, const T* vt, int64_t m, int64_t d, int64_t k, T* p,
                           cudaStream_t stream);

}  // namespace lore::cuda
