// CUDA registration of lore::lowrank_bt, lore::lowrank_margin and
// lore::project: validation, allocation, the current stream and device, and
// the GEMMs over users around the row pass (H = S V^T; dV = G^T S, dS = G V).
// The kernels are in lowrank_bt.cu, which includes no torch header.
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
                  ? " (d or K may be too large for the kernel's shared memory; "
                    "LORE_BACKEND=torch runs the reference)"
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

// Rows sorted by user (the data contract): the row pass needs each user's
// rows contiguous. Unsorted input is sorted here (a copy of Z) and the
// margins are put back in the caller's order; `inverse` is then defined.
struct SortedRows {
  at::Tensor Z, user, weight, inverse;
};

SortedRows sorted_rows(const at::Tensor& Z, const at::Tensor& user, const at::Tensor& weight) {
  const int64_t m = user.size(0);
  if (m < 2 || (user.narrow(0, 1, m - 1) >= user.narrow(0, 0, m - 1)).all().item<bool>())
    return {Z, user, weight, at::Tensor()};
  const at::Tensor perm = std::get<1>(user.sort(/*stable=*/true));
  return {Z.index_select(0, perm), user.index_select(0, perm),
          weight.defined() ? weight.index_select(0, perm) : weight, std::get<1>(perm.sort())};
}

// The row pass of lowrank_bt (G defined) or lowrank_margin over H = S V^T.
template <typename T>
void run_rows(const SortedRows& rows, const at::Tensor& H, double tau, double noise,
              at::Tensor& margin,
              at::Tensor* G, at::Tensor* loss, const char* op) {
  cuda::RowsCall<T> c{};
  c.z = z_view(rows.Z);
  c.user = rows.user.data_ptr<int64_t>();
  c.weight = G ? rows.weight.data_ptr<T>() : nullptr;
  c.heads = H.data_ptr<T>();
  c.m = rows.Z.size(0);
  c.d = rows.Z.size(1);
  c.tau = T(tau);
  c.noise = T(noise);
  c.grad = G != nullptr;
  c.margin = margin.data_ptr<T>();
  c.g = G ? G->data_ptr<T>() : nullptr;
  c.loss = loss ? loss->data_ptr<T>() : nullptr;
  if (c.m == 0) {
    if (loss) loss->zero_();
    return;
  }
  cuda::Plan plan{};
  check_cuda(cuda::plan_rows<T>(c, &plan), op, "planning the launch");
  const at::Tensor workspace =
      at::empty({int64_t(plan.workspace_bytes)}, rows.Z.options().dtype(at::kByte));
  check_cuda(cuda::launch_rows<T>(c, plan, workspace.data_ptr(),
                                  c10::cuda::getCurrentCUDAStream()),
             op, "the kernel launch");
}

// Per-user heads H = S V^T, and the row pass (see lowrank_bt.cu).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lowrank_bt_cuda(
    const at::Tensor& Z_in, const at::Tensor& user_in, const at::Tensor& weight_in,
    const at::Tensor& V_in, const at::Tensor& S_in, double tau, double label_noise) {
  const char* op = "lore::lowrank_bt";
  const BtShapes sh = check_bt_inputs(Z_in, user_in, weight_in, V_in, S_in, op);
  check_label_noise(label_noise, op);
  const c10::cuda::CUDAGuard guard(Z_in.device());
  const at::Tensor V = V_in.contiguous(), S = S_in.contiguous();
  check_user_range(user_in, sh.n, op);
  const SortedRows rows =
      sorted_rows(rows_view(Z_in), user_in.contiguous(), weight_in.contiguous());

  const auto opts = Z_in.options().dtype(sh.acc);
  const at::Tensor H = at::mm(S, V.t());
  at::Tensor G = at::zeros({sh.n, sh.d}, opts);
  at::Tensor loss = at::empty({}, opts), margin = at::empty({sh.m}, opts);
  if (sh.acc == at::kDouble)
    run_rows<double>(rows, H, tau, label_noise, margin, &G, &loss, op);
  else
    run_rows<float>(rows, H, tau, label_noise, margin, &G, &loss, op);
  if (rows.inverse.defined()) margin = margin.index_select(0, rows.inverse);
  return {loss, margin, at::mm(G.t(), S), at::mm(G, V)};
}

at::Tensor lowrank_margin_cuda(const at::Tensor& Z_in, const at::Tensor& user_in,
                               const at::Tensor& V_in, const at::Tensor& S_in) {
  const char* op = "lore::lowrank_margin";
  const BtShapes sh = check_margin_inputs(Z_in, user_in, V_in, S_in, op);
  const c10::cuda::CUDAGuard guard(Z_in.device());
  check_user_range(user_in, sh.n, op);
  const SortedRows rows = sorted_rows(rows_view(Z_in), user_in.contiguous(), at::Tensor());
  const at::Tensor H = at::mm(S_in.contiguous(), V_in.contiguous().t());
  at::Tensor margin = at::empty({sh.m}, Z_in.options().dtype(sh.acc));
  if (sh.acc == at::kDouble)
    run_rows<double>(rows, H, 0.0, 0.0, margin, nullptr, nullptr, op);
  else
    run_rows<float>(rows, H, 0.0, 0.0, margin, nullptr, nullptr, op);
  return rows.inverse.defined() ? margin.index_select(0, rows.inverse) : margin;
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
  m.impl("lowrank_margin", &lowrank_margin_cuda);
  m.impl("project", &project_cuda);
}

}  // namespace lore
