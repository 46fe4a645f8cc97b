// C entry points over the real code of csrc/cuda/: the row index the
// registration builds (lowrank_bt_index.h) and the plan and launch functions
// of lowrank_bt.cu, compiled for the CPU against the fiber emulator in
// cuda_runtime.h (this directory comes first on the include path). Loaded by
// tests/test_cuda_emulated.py with ctypes; inputs and outputs are host arrays.
#include <cuda_runtime.h>

#include <vector>

#include "../../csrc/cuda/lowrank_bt.cu"
#include "../../csrc/cuda/lowrank_bt_index.h"

namespace {

template <typename T>
int run_rows(const void* z, int64_t ldz, int ztype, const int64_t* perm, const int64_t* offsets,
             int64_t users, const void* weight, const void* heads, int64_t m, int64_t d,
             double tau, double noise, int grad, void* margin, void* g, void* loss,
             int64_t* info) {
  lore::cuda::RowsCall<T> c{};
  c.z = lore::ZView{z, ldz, static_cast<lore::ZType>(ztype)};
  c.perm = perm;
  c.offsets = offsets;
  c.users = users;
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
  info[1] = plan.workers;
  info[2] = plan.warp_tiles;
  info[3] = plan.items;
  info[4] = plan.tile_rows;
  info[5] = int64_t(plan.workspace_bytes);
  std::vector<unsigned char> workspace(plan.workspace_bytes + 64, 0x5A);  // garbage on purpose
  return int(lore::cuda::launch_rows<T>(c, plan, workspace.data(), nullptr));
}

}  // namespace

extern "C" {

void emu_configure(int sms, int smem_optin, int blocks_per_sm) {
  emu::g_sms = sms;
  emu::g_smem_optin = smem_optin;
  emu::g_blocks_per_sm = blocks_per_sm;
  lore::cuda::clear_plan_cache();
}

// build_row_index; out = [bad_row, sorted, users].
void emu_row_index(const int64_t* user, int64_t m, int64_t n, int64_t* perm, int64_t* present,
                   int64_t* offsets, int64_t* out) {
  const lore::cuda::RowIndexInfo info =
      lore::cuda::build_row_index(user, m, n, perm, present, offsets);
  out[0] = info.bad_row;
  out[1] = info.sorted;
  out[2] = info.users;
}

int64_t emu_extra_bytes(int64_t m, int64_t d, int64_t k, int64_t users, int sorted,
                        int64_t workspace, int64_t acc) {
  return lore::cuda::extra_bytes(m, d, k, users, sorted != 0, workspace, acc);
}

// The plan alone (no launch): info as in emu_rows.
int emu_plan(int acc_double, int ztype, int64_t m, int64_t d, int grad, int64_t* info) {
  lore::cuda::Plan plan{};
  cudaError_t err = cudaSuccess;
  if (acc_double) {
    lore::cuda::RowsCall<double> c{};
    c.z = lore::ZView{nullptr, d, static_cast<lore::ZType>(ztype)};
    c.m = m;
    c.d = d;
    c.grad = grad != 0;
    err = lore::cuda::plan_rows<double>(c, &plan);
  } else {
    lore::cuda::RowsCall<float> c{};
    c.z = lore::ZView{nullptr, d, static_cast<lore::ZType>(ztype)};
    c.m = m;
    c.d = d;
    c.grad = grad != 0;
    err = lore::cuda::plan_rows<float>(c, &plan);
  }
  info[0] = plan.blocks;
  info[1] = plan.workers;
  info[2] = plan.warp_tiles;
  info[3] = plan.items;
  info[4] = plan.tile_rows;
  info[5] = int64_t(plan.workspace_bytes);
  return int(err);
}

int emu_rows(int acc_double, const void* z, int64_t ldz, int ztype, const int64_t* perm,
             const int64_t* offsets, int64_t users, const void* weight, const void* heads,
             int64_t m, int64_t d, double tau, double noise, int grad, void* margin, void* g,
             void* loss, int64_t* info) {
  if (acc_double)
    return run_rows<double>(z, ldz, ztype, perm, offsets, users, weight, heads, m, d, tau, noise,
                            grad, margin, g, loss, info);
  return run_rows<float>(z, ldz, ztype, perm, offsets, users, weight, heads, m, d, tau, noise,
                         grad, margin, g, loss, info);
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
