// C entry points over the real launch functions of csrc/cuda/lowrank_bt.cu,
// compiled for the CPU against the fiber emulator in cuda_runtime.h (this
// directory comes first on the include path). Loaded by
// tests/test_cuda_emulated.py with ctypes; inputs and outputs are host arrays.
#include <cuda_runtime.h>

#include <vector>

#include "../../csrc/cuda/lowrank_bt.cu"

namespace {

template <typename T>
int run_rows(const void* z, int64_t ldz, int ztype, const int64_t* user, const void* weight,
             const void* heads, int64_t m, int64_t d, double tau, double noise, int grad,
             void* margin, void* g, void* loss, int* info) {
  lore::cuda::RowsCall<T> c{};
  c.z = lore::ZView{z, ldz, static_cast<lore::ZType>(ztype)};
  c.user = user;
  c.weight = static_cast<const T*>(weight);
  c.heads = static_cast<const T*>(heads);
  c.m = m;
  c.d = d;
  c.tau = T(tau);
  c.noise = T(noise);
  c.grad = grad != 0;
  c.margin = static_cast<T*>(margin);
  c.g = static_cast<T*>(g);
  c.loss = static_cast<T*>(loss);
  lore::cuda::Plan plan{};
  cudaError_t err = lore::cuda::plan_rows<T>(c, &plan);
  if (err != cudaSuccess) return int(err);
  info[0] = plan.blocks;
  std::vector<unsigned char> workspace(plan.workspace_bytes + 64, 0x5A);  // garbage on purpose
  return int(lore::cuda::launch_rows<T>(c, plan, workspace.data(), nullptr));
}

}  // namespace

extern "C" {

void emu_configure(int sms, int smem_optin, int blocks_per_sm) {
  emu::g_sms = sms;
  emu::g_smem_optin = smem_optin;
  emu::g_blocks_per_sm = blocks_per_sm;
}

int emu_rows(int acc_double, const void* z, int64_t ldz, int ztype, const int64_t* user,
             const void* weight, const void* heads, int64_t m, int64_t d, double tau, double noise,
             int grad,
             void* margin, void* g, void* loss, int* info) {
  if (acc_double)
    return run_rows<double>(z, ldz, ztype, user, weight, heads, m, d, tau, noise, grad, margin, g, loss,
                            info);
  return run_rows<float>(z, ldz, ztype, user, weight, heads, m, d, tau, noise, grad, margin, g, loss,
                         info);
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
