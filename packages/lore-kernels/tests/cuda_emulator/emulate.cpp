// C entry points over the real launch functions of csrc/cuda/lowrank_bt.cu,
// compiled for the CPU against the fiber emulator in cuda_runtime.h (this
// directory comes first on the include path). Loaded by
// tests/test_cuda_emulated.py with ctypes; inputs and outputs are host arrays.
#include <cuda_runtime.h>

#include <vector>

#include "../../csrc/cuda/lowrank_bt.cu"

namespace {

template <typename T>
int run_bt(const void* z, int64_t ldz, int ztype, const int64_t* user, const void* weight,
           const void* vt, const void* s, int64_t m, int64_t d, int64_t k, int64_t n, double tau,
           int deterministic, void* loss, void* margin, void* dv, void* ds, void* gp, int* info) {
  lore::cuda::BtArgs<T> a{};
  a.z = lore::ZView{z, ldz, static_cast<lore::ZType>(ztype)};
  a.user = user;
  a.weight = static_cast<const T*>(weight);
  a.vt = static_cast<const T*>(vt);
  a.s = static_cast<const T*>(s);
  a.m = m;
  a.d = d;
  a.k = k;
  a.n = n;
  a.tau = T(tau);
  a.deterministic = deterministic != 0;
  a.loss = static_cast<T*>(loss);
  a.margin = static_cast<T*>(margin);
  a.dv = static_cast<T*>(dv);
  a.ds = static_cast<T*>(ds);
  a.gp = static_cast<T*>(gp);
  lore::cuda::Plan plan{};
  cudaError_t err = lore::cuda::plan_lowrank_bt<T>(a, &plan);
  if (err != cudaSuccess) return int(err);
  info[0] = plan.blocks;
  info[1] = plan.cache_rows ? 1 : 0;
  std::vector<unsigned char> workspace(plan.workspace_bytes + 64, 0x5A);  // garbage on purpose
  return int(lore::cuda::launch_lowrank_bt<T>(a, plan, workspace.data(), nullptr));
}

}  // namespace

extern "C" {

void emu_configure(int sms, int smem_optin, int blocks_per_sm) {
  emu::g_sms = sms;
  emu::g_smem_optin = smem_optin;
  emu::g_blocks_per_sm = blocks_per_sm;
}

int emu_lowrank_bt(int acc_double, const void* z, int64_t ldz, int ztype, const int64_t* user,
                   const void* weight, const void* vt, const void* s, int64_t m, int64_t d,
                   int64_t k, int64_t n, double tau, int deterministic, void* loss, void* margin,
                   void* dv, void* ds, void* gp, int* info) {
  if (acc_double)
    return run_bt<double>(z, ldz, ztype, user, weight, vt, s, m, d, k, n, tau, deterministic,
                          loss, margin, dv, ds, gp, info);
  return run_bt<float>(z, ldz, ztype, user, weight, vt, s, m, d, k, n, tau, deterministic, loss,
                       margin, dv, ds, gp, info);
}

int emu_project(int acc_double, const void* z, int64_t ldz, int ztype, const void* vt, int64_t m,
                int64_t d, int64_t k, void* p) {
  const lore::ZView view{z, ldz, static_cast<lore::ZType>(ztype)};
  if (acc_double)
    return int(lore::cuda::launch_project<double>(view, static_cast<const double*>(vt), m, d, k,
                                                  static_cast<double*>(p), nullptr));
  return int(lore::cuda::launch_project<float>(view, static_cast<const float*>(vt), m, d, k,
                                               static_cast<float*>(p), nullptr));
}

}  // extern "C"
