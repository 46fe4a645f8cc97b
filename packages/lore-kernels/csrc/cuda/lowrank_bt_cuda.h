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
template <typename T>
struct BtArgs {
  ZView z;              // [m, d], unit column stride
  const int64_t* user;  // [m], values in [0, n) (checked by the caller)
  const T* weight;      // [m]
  const T* vt;          // V^T [k, d] row-major (the caller transposes V)
  const T* s;           // [n, k]
  int64_t m, d, k, n;
  T tau;
  // Outputs. dv is [d, k]. In the default mode ds [n, k] must be zeroed and
  // gets atomic adds (one per run of equal users per block); in deterministic
  // mode ds is untouched and gp [m, k] receives g_m * P_m, for the caller to
  // reduce by user deterministically.
  bool deterministic;
  T* loss;
  T* margin;
  T* dv;
  T* ds;
  T* gp;
};

// Grid, tile and memory of one call, from the device's properties.
struct Plan {
  int blocks;
  bool cache_rows;        // the tile of Z lives in shared memory
  size_t smem_bytes;      // dynamic shared memory per block
  size_t workspace_bytes; // per-block partial dV^T and loss, for launch_lowrank_bt
};

template <typename T>
cudaError_t plan_lowrank_bt(const BtArgs<T>& args, Plan* plan);

// Needs `workspace` of plan.workspace_bytes (any content).
template <typename T>
cudaError_t launch_lowrank_bt(const BtArgs<T>& args, const Plan& plan, void* workspace,
                              cudaStream_t stream);

// P = Z V, [m, k] row-major; vt = V^T [k, d].
template <typename T>
cudaError_t launch_project(ZView z, const T* vt, int64_t m, int64_t d, int64_t k, T* p,
                           cudaStream_t stream);

}  // namespace lore::cuda
