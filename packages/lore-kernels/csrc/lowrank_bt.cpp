// The op schema (namespace `lore`) and its CPU implementation; the CUDA one is
// registered from cuda/lowrank_bt_cuda.cpp. This and that file are the only
// ones that include torch headers; the kernels themselves take raw pointers.
#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/lowrank_bt_cpu.h"
#include "lowrank_bt_checks.h"

// `from lore_kernels import _C` loads this library, which runs the
// registrations below; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr,
                            nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}

namespace lore {
namespace {

// Checks that every user id indexes a row of S; returns whether they are sorted.
bool check_users(const at::Tensor& user, int64_t n, const char* op) {
  const int64_t* u = user.data_ptr<int64_t>();
  const int64_t m = user.size(0);
  bool sorted = true;
  for (int64_t i = 0; i < m; ++i) {
    if (u[i] < 0 || u[i] >= n) fail_user_range(i, u[i], n, op);
    sorted = sorted && (i == 0 || u[i] >= u[i - 1]);
  }
  return sorted;
}

template <typename T>
cpu::BtInputs<T> bt_inputs(const at::Tensor& Z, const at::Tensor& user, const T* weight,
                           const at::Tensor& V, const at::Tensor& S, double tau,
                           double noise, const BtShapes& sh, bool sorted) {
  return {z_view(Z), user.data_ptr<int64_t>(), weight, V.data_ptr<T>(), S.data_ptr<T>(),
          sh.m, sh.d, sh.k, sh.n, T(tau), sorted, T(noise)};
}

template <typename T>
void run_bt(const at::Tensor& Z, const at::Tensor& user, const at::Tensor& weight,
            const at::Tensor& V, const at::Tensor& S, double tau, double noise,
            const BtShapes& sh, bool sorted, at::Tensor& loss, at::Tensor& margin,
            at::Tensor& dV, at::Tensor& dS) {
  const auto in = bt_inputs<T>(Z, user, weight.data_ptr<T>(), V, S, tau, noise, sh, sorted);
  cpu::BtOutputs<T> out{loss.data_ptr<T>(), margin.data_ptr<T>(), dV.data_ptr<T>(),
                        dS.data_ptr<T>()};
  cpu::lowrank_bt<T>(in, out, at::get_num_threads());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lowrank_bt_cpu(
    const at::Tensor& Z_in, const at::Tensor& user_in, const at::Tensor& weight_in,
    const at::Tensor& V_in, const at::Tensor& S_in, double tau, double label_noise) {
  const char* op = "lore::lowrank_bt";
  const BtShapes sh = check_bt_inputs(Z_in, user_in, weight_in, V_in, S_in, op);
  check_label_noise(label_noise, op);
  const at::Tensor Z = rows_view(Z_in);
  const at::Tensor user = user_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor V = V_in.contiguous(), S = S_in.contiguous();
  const bool sorted = check_users(user, sh.n, op);

  const auto opts = Z.options().dtype(sh.acc);
  at::Tensor loss = at::empty({}, opts), margin = at::empty({sh.m}, opts);
  at::Tensor dV = at::empty({sh.d, sh.k}, opts), dS = at::empty({sh.n, sh.k}, opts);
  if (sh.acc == at::kDouble)
    run_bt<double>(Z, user, weight, V, S, tau, label_noise, sh, sorted, loss, margin, dV, dS);
  else
    run_bt<float>(Z, user, weight, V, S, tau, label_noise, sh, sorted, loss, margin, dV, dS);
  return {loss, margin, dV, dS};
}

at::Tensor lowrank_margin_cpu(const at::Tensor& Z_in, const at::Tensor& user_in,
                              const at::Tensor& V_in, const at::Tensor& S_in) {
  const char* op = "lore::lowrank_margin";
  const BtShapes sh = check_margin_inputs(Z_in, user_in, V_in, S_in, op);
  const at::Tensor Z = rows_view(Z_in);
  const at::Tensor user = user_in.contiguous();
  const at::Tensor V = V_in.contiguous(), S = S_in.contiguous();
  const bool sorted = check_users(user, sh.n, op);
  at::Tensor margin = at::empty({sh.m}, Z.options().dtype(sh.acc));
  if (sh.acc == at::kDouble)
    cpu::lowrank_margin<double>(bt_inputs<double>(Z, user, nullptr, V, S, 0.0, 0.0, sh, sorted),
                                margin.data_ptr<double>(), at::get_num_threads());
  else
    cpu::lowrank_margin<float>(bt_inputs<float>(Z, user, nullptr, V, S, 0.0, 0.0, sh, sorted),
                               margin.data_ptr<float>(), at::get_num_threads());
  return margin;
}

at::Tensor project_cpu(const at::Tensor& Z_in, const at::Tensor& V_in) {
  const int64_t k = check_project_inputs(Z_in, V_in, "lore::project");
  const at::Tensor Z = rows_view(Z_in), V = V_in.contiguous();
  const auto acc = V.scalar_type();
  at::Tensor P = at::empty({Z.size(0), k}, Z.options().dtype(acc));
  if (acc == at::kDouble)
    cpu::project<double>(z_view(Z), V.data_ptr<double>(), Z.size(0), Z.size(1), k,
                         P.data_ptr<double>(), at::get_num_threads());
  else
    cpu::project<float>(z_view(Z), V.data_ptr<float>(), Z.size(0), Z.size(1), k,
                        P.data_ptr<float>(), at::get_num_threads());
  return P;
}

// [instruction set (0 generic, 1 AVX2, 2 AVX-512), chunks, distinct threads]
// of the last CPU call: lets tests check that the work really ran in parallel.
std::vector<int64_t> cpu_last_call() {
  const cpu::LastCall c = cpu::last_call();
  return {c.isa, c.chunks, c.threads_seen};
}

}  // namespace

TORCH_LIBRARY(lore, m) {
  m.def(
      "lowrank_bt(Tensor Z, Tensor user, Tensor weight, Tensor V, Tensor S, float tau,"
      " float label_noise=0.0)"
      " -> (Tensor loss, Tensor margin, Tensor dV, Tensor dS)");
  m.def("lowrank_margin(Tensor Z, Tensor user, Tensor V, Tensor S) -> Tensor");
  m.def("project(Tensor Z, Tensor V) -> Tensor");
  m.def("_cpu_last_call() -> int[]", &cpu_last_call);
}

TORCH_LIBRARY_IMPL(lore, CPU, m) {
  m.impl("lowrank_bt", &lowrank_bt_cpu);
  m.impl("lowrank_margin", &lowrank_margin_cpu);
  m.impl("project", &project_cpu);
}

}  // namespace lore
