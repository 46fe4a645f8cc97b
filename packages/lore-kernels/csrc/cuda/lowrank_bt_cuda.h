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
// One call of the row pass of lowrank_bt (grad) or lowrank_margin (!grad);
// H = S V^T before it and dV = G^T S, dS = G V after it are the caller's
// GEMMs (see lowrank_bt.cu).
template <typename T>
struct RowsCall {
  ZView z;              // [m, d], unit column stride
  const int64_t* user;  // [m], sorted, values in [0, n) (checked by the caller)
  const T* weight;      // [m] (grad only)
  const T* heads;       // H = S V^T [n, d]
  int64_t m, d;
  T tau;
  T noise;  // label noise of the likelihood (grad only; lowrank_bt_row.h)
  bool grad;
  T* margin;  // [m]
  T* g;       // G [n, d], zeroed by the caller (grad only)
  T* loss;    // scalar (grad only)
};

// Grid and memory of one call, from the device's properties.
struct Plan {
  int blocks;
  size_t smem_bytes;       // dynamic shared memory per block
  size_t workspace_bytes;  // edge slots and loss partials, for launch_rows
};

template <typename T>
cudaError_t plan_rows(const RowsCall<T>& call, Plan* plan);

// Needs `workspace` of plan.workspace_bytes (any content). Deterministic.
template <typename T>
cudaError_t launch_rows(const RowsCall<T>& call, const Plan& plan, void* workspace,
                        cudaStream_t stream);

// P = Z V, [m, k] row-major; vt = V^T [k, d].
template <typename T>
cudaError_t launch_project(ZView z, const T* vt, int64_t m, int64_t d, int64_t k, T* p,
                           cudaStream_t stream);

}  // namespace lore::cuda
