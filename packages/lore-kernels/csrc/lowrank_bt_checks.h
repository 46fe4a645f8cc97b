// Input validation shared by the CPU and CUDA registrations of lore::lowrank_bt
// and lore::project: one place that names the argument at fault.
#pragma once

#include <ATen/ATen.h>

#include "zview.h"

namespace lore {

struct BtShapes {
  int64_t m, d, k, n;
  at::ScalarType acc;  // accumulation/output dtype: float64 iff Z is float64
};

inline at::ScalarType acc_dtype_for(const at::Tensor& Z, const char* op) {
  const auto t = Z.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || t == at::kDouble, op,
              ": Z must be float32, bfloat16, float16 or float64, got ", t);
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The kernels' view of Z (after rows_view).
inline ZView z_view(const at::Tensor& Z) {
  ZType t = ZType::kF32;
  switch (Z.scalar_type()) {
    case at::kDouble: t = ZType::kF64; break;
    case at::kBFloat16: t = ZType::kBF16; break;
    case at::kHalf: t = ZType::kF16; break;
    default: break;
  }
  return {Z.data_ptr(), Z.size(0) > 1 ? Z.stride(0) : Z.size(1), t};
}

// Z as a matrix with unit column stride (copied only if it is not one).
inline at::Tensor rows_view(const at::Tensor& Z) {
  return Z.stride(1) == 1 && Z.stride(0) >= Z.size(1) ? Z : Z.contiguous();
}

inline void check_param(const at::Tensor& t, const char* op, const char* name,
                        at::ScalarType acc, const at::Tensor& Z) {
  TORCH_CHECK(t.scalar_type() == acc, op, ": ", name, " must be ", acc, " (the accumulation ",
              "dtype for Z of dtype ", Z.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == Z.device(), op, ": ", name, " is on ", t.device(), " but Z is on ",
              Z.device());
}

inline int64_t check_project_inputs(const at::Tensor& Z, const at::Tensor& V, const char* op) {
  TORCH_CHECK(Z.dim() == 2, op, ": Z must be 2-D [M, d], got shape ", Z.sizes());
  const auto acc = acc_dtype_for(Z, op);
  TORCH_CHECK(V.dim() == 2 && V.size(0) == Z.size(1), op, ": V must be [d, K] with d = ",
              Z.size(1), " (Z's columns), got shape ", V.sizes());
  TORCH_CHECK(V.size(1) >= 1, op, ": V must have at least one column (K >= 1)");
  check_param(V, op, "V", acc, Z);
  return V.size(1);
}

// Z, user, V and S of lowrank_bt and lowrank_margin.
inline BtShapes check_margin_inputs(const at::Tensor& Z, const at::Tensor& user,
                                    const at::Tensor& V, const at::Tensor& S, const char* op) {
  const int64_t k = check_project_inputs(Z, V, op);
  const int64_t m = Z.size(0);
  const auto acc = acc_dtype_for(Z, op);
  TORCH_CHECK(S.dim() == 2 && S.size(1) == k, op, ": S must be [N, K] with K = ", k,
              " (V's columns), got shape ", S.sizes());
  check_param(S, op, "S", acc, Z);
  TORCH_CHECK(user.dim() == 1 && user.size(0) == m, op, ": user must be 1-D with M = ", m,
              " entries (Z's rows), got shape ", user.sizes());
  TORCH_CHECK(user.scalar_type() == at::kLong, op, ": user must be int64, got ",
              user.scalar_type());
  TORCH_CHECK(user.device() == Z.device(), op, ": user is on ", user.device(),
              " but Z is on ", Z.device());
  return {m, Z.size(1), k, S.size(0), acc};
}

inline BtShapes check_bt_inputs(const at::Tensor& Z, const at::Tensor& user,
                                const at::Tensor& weight, const at::Tensor& V,
                                const at::Tensor& S, const char* op) {
  const BtShapes sh = check_margin_inputs(Z, user, V, S, op);
  const int64_t m = sh.m;
  const auto acc = sh.acc;
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == m, op, ": weight must be 1-D with M = ", m,
              " entries (Z's rows), got shape ", weight.sizes());
  check_param(weight, op, "weight", acc, Z);
  return sh;
}

// The label-noise likelihood needs 0 <= eps < 0.5 (at 0.5 labels carry nothing).
inline void check_label_noise(double eps, const char* op) {
  TORCH_CHECK(eps >= 0.0 && eps < 0.5, op, ": label_noise must be in [0, 0.5), got ", eps);
}

// Names the first row whose user id does not index a row of S.
[[noreturn]] inline void fail_user_range(int64_t row, int64_t u, int64_t n, const char* op) {
  TORCH_CHECK(false, op, ": user[", row, "] = ", u, " is out of range [0, ", n,
              ") (S has N = ", n, " rows)");
  __builtin_unreachable();
}

}  // namespace lore
