// CUDA registration of lore::lowrank_bt and lore::project: validation,
// allocation, the current stream and device. The kernels are in
// lowrank_bt.cu, which includes no torch header.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../lowrank_bt_checks.h"
#include "lowrank_bt_cuda.h"

namespace lore {
namespace {

void check_cuda(cudaError_t err, const char* op, const char* what) {
  TORCH_CHECK(err == cudaSuccess, op, ": ", what, " failed: ", cudaGetErrorString(err),
              err == cudaErrorInvalidValue
                  ? " (K may be too large for the kernel's shared memory; LORE_BACKEND=torch "
                    "runs the reference)"
                  : "");
}

// One device sync per call, to name the first row with a bad user id.
void check_user_range(const at::Tensor& user, int64_t n, const char* op) {
  if (user.numel() == 0) return;
  const at::Tensor bad = at::logical_or(user < 0, user >= n);
  if (bad.any().item<bool>()) {
    const int64_t row = bad.nonzero()[0][0].item<int64_t>();
    fail_user_range(row, user[row].item<int64_t>(), n, op);
  }
}

template <typename T>
void run_bt(const at::Tensor& Z, const at::Tensor& user, const at::Tensor& weight,
            const at::Tensor& Vt, const at::Tensor& S, double tau, const BtShapes& sh,
            bool deterministic, at::Tensor& loss, at::Tensor& margin, at::Tensor& dV,
            at::Tensor& dS, at::Tensor& gp) {
  const char* op = "lore::lowrank_bt";
  cuda::BtArgs<T> a{};
  a.z = z_view(Z);
  a.user = user.data_ptr<int64_t>();
  a.weight = weight.data_ptr<T>();
  a.vt = Vt.data_ptr<T>();
  a.s = S.data_ptr<T>();
  a.m = sh.m;
  a.d = sh.d;
  a.k = sh.k;
  a.n = sh.n;
  a.tau = T(tau);
  a.deterministic = deterministic;
  a.loss = loss.data_ptr<T>();
  a.margin = margin.data_ptr<T>();
  a.dv = dV.data_ptr<T>();
  a.ds = dS.data_ptr<T>();
  a.gp = deterministic ? gp.data_ptr<T>() : nullptr;
  cuda::Plan plan{};
  check_cuda(cuda::plan_lowrank_bt<T>(a, &plan), op, "planning the launch");
  const at::Tensor workspace =
      at::empty({int64_t(plan.workspace_bytes)}, Z.options().dtype(at::kByte));
  check_cuda(cuda::launch_lowrank_bt<T>(a, plan, workspace.data_ptr(),
                                        c10::cuda::getCurrentCUDAStream()),
             op, "the kernel launch");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lowrank_bt_cuda(
    const at::Tensor& Z_in, const at::Tensor& user_in, const at::Tensor& weight_in,
    const at::Tensor& V_in, const at::Tensor& S_in, double tau) {
  const char* op = "lore::lowrank_bt";
  const BtShapes sh = check_bt_inputs(Z_in, user_in, weight_in, V_in, S_in, op);
  const c10::cuda::CUDAGuard guard(Z_in.device());
  const at::Tensor Z = rows_view(Z_in);
  const at::Tensor user = user_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor Vt = V_in.t().contiguous(), S = S_in.contiguous();
  check_user_range(user, sh.n, op);

  // dS: atomics over runs of equal users by default; in torch's deterministic
  // mode the kernel writes g P per row and index_add_ (then deterministic)
  // reduces it by user.
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const auto opts = Z.options().dtype(sh.acc);
  at::Tensor loss = at::empty({}, opts), margin = at::empty({sh.m}, opts);
  at::Tensor dV = at::empty({sh.d, sh.k}, opts), dS = at::empty({sh.n, sh.k}, opts);
  at::Tensor gp = deterministic ? at::empty({std::max<int64_t>(sh.m, 1), sh.k}, opts)
                                : at::Tensor();
  if (sh.acc == at::kDouble)
    run_bt<double>(Z, user, weight, Vt, S, tau, sh, deterministic, loss, margin, dV, dS, gp);
  else
    run_bt<float>(Z, user, weight, Vt, S, tau, sh, deterministic, loss, margin, dV, dS, gp);
  if (deterministic) dS = at::zeros({sh.n, sh.k}, opts).index_add_(0, user, gp.narrow(0, 0, sh.m));
  return {loss, margin, dV, dS};
}

at::Tensor project_cuda(const at::Tensor& Z_in, const at::Tensor& V_in) {
  const char* op = "lore::project";
  const int64_t k = check_project_inputs(Z_in, V_in, op);
  const c10::cuda::CUDAGuard guard(Z_in.device());
  const at::Tensor Z = rows_view(Z_in), Vt = V_in.t().contiguous();
  at::Tensor P = at::empty({Z.size(0), k}, Z.options().dtype(V_in.scalar_type()));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (P.scalar_type() == at::kDouble)
    check_cuda(cuda::launch_project<double>(z_view(Z), Vt.data_ptr<double>(), Z.size(0),
                                            Z.size(1), k, P.data_ptr<double>(), stream),
               op, "the kernel launch");
  else
    check_cuda(cuda::launch_project<float>(z_view(Z), Vt.data_ptr<float>(), Z.size(0), Z.size(1),
                                           k, P.data_ptr<float>(), stream),
               op, "the kernel launch");
  return P;
}

}  // namespace

TORCH_LIBRARY_IMPL(lore, CUDA, m) {
  m.impl("lowrank_bt", &lowrank_bt_cuda);
  m.impl("project", &project_cuda);
}

}  // namespace lore
