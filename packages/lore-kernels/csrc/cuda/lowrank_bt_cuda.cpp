// CUDA registration of lore::lowrank_bt, lore::lowrank_margin and
// lore::project: validation, allocation, the current stream and device, the
// row index, and the GEMMs over the present users around the row pass
// (H = S[present] V^T; dV = G^T S[present], dS[present] = G V).
// The kernels are in lowrank_bt.cu, which includes no torch header.
//
// No host synchronisation once the row index of a `user` tensor is known: the
// index (range check, sortedness, permutation, present users; built on the
// host by lowrank_bt_index.h from one device-to-host copy of `user`) is kept
// per user tensor and version, so a training loop that passes the same
// `user` every step syncs on its first call only, and the op can then be
// captured in a CUDA graph. An in-place change of `user` bumps its version
// and rebuilds the index; inference tensors have no version and are indexed
// on every call.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <list>
#include <mutex>
#include <tuple>

#include "../lowrank_bt_checks.h"
#include "lowrank_bt_cuda.h"
#include "lowrank_bt_index.h"

namespace lore {
namespace {

void check_cuda(cudaError_t err, const char* op, const char* what) {
  TORCH_CHECK(err == cudaSuccess, op, ": ", what, " failed: ", cudaGetErrorString(err),
              err == cudaErrorInvalidValue
                  ? " (d may be too large for the kernel: at most 8192 columns, 4096 in fp64, or K for the "
                    "projection's shared memory; LORE_BACKEND=torch runs the reference)"
                  : "");
}

// The row index of one call, on the device (lowrank_bt_index.h).
struct RowIndex {
  at::Tensor perm;     // [m] position in user order -> row; undefined when sorted
  at::Tensor present;  // [users]
  at::Tensor offsets;  // [users + 1]
  int64_t users = 0;
  cudaStream_t stream = nullptr;  // the stream the index was allocated on
};

// Tells the caching allocator that `stream` reads the index, when it is not
// the stream the index was allocated on: freeing the index (evicted from the
// cache) must not hand its memory out before that stream's work is done.
void use_on_current_stream(const RowIndex& index) {
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  if (stream.stream() == index.stream) return;
  for (const at::Tensor* t : {&index.perm, &index.present, &index.offsets})
    if (t->defined()) t->record_stream(stream);
}

struct IndexEntry {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> owner;
  const c10::TensorImpl* impl;  // valid while `owner` has not expired
  uint32_t version;
  const void* data;
  int64_t m, n;
  RowIndex index;
};

constexpr size_t kIndexCacheSize = 8;

std::mutex& index_mutex() {
  static std::mutex m;
  return m;
}
std::list<IndexEntry>& index_cache() {
  static std::list<IndexEntry> cache;
  return cache;
}

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
         status != cudaStreamCaptureStatusNone;
}

// Builds the index on the host: one copy of `user` to the host (a sync) and
// three small copies back. Names the first row whose user is out of range.
RowIndex build_index(const at::Tensor& user, int64_t n, const char* op) {
  TORCH_CHECK(!capturing(c10::cuda::getCurrentCUDAStream()), op,
              ": this `user` tensor is new to the op, and its row index needs one host copy, "
              "which a CUDA graph capture forbids: call the op once on these inputs before "
              "capturing");
  const at::Tensor host = user.to(at::kCPU).contiguous();
  const int64_t m = host.numel();
  const auto cpu = host.options();
  at::Tensor perm = at::empty({std::max<int64_t>(m, 1)}, cpu);
  at::Tensor present = at::empty({std::max<int64_t>(m, 1)}, cpu);
  at::Tensor offsets = at::empty({m + 1}, cpu);
  const cuda::RowIndexInfo info =
      cuda::build_row_index(host.data_ptr<int64_t>(), m, n, perm.data_ptr<int64_t>(),
                            present.data_ptr<int64_t>(), offsets.data_ptr<int64_t>());
  if (info.bad_row >= 0)
    fail_user_range(info.bad_row, host.data_ptr<int64_t>()[info.bad_row], n, op);
  RowIndex index;
  index.users = info.users;
  index.stream = c10::cuda::getCurrentCUDAStream().stream();
  index.present = present.narrow(0, 0, info.users).to(user.device());
  index.offsets = offsets.narrow(0, 0, info.users + 1).to(user.device());
  if (!info.sorted) index.perm = perm.narrow(0, 0, m).to(user.device());
  return index;
}

// The cached index of `user` (same tensor, version, data and n), or a new one.
RowIndex row_index(const at::Tensor& user, int64_t n, const char* op) {
  const c10::TensorImpl* impl = user.unsafeGetTensorImpl();
  const bool cacheable = impl->version_counter().enabled();
  const uint32_t version = cacheable ? impl->version_counter().current_version() : 0;
  if (cacheable) {
    const std::lock_guard<std::mutex> lock(index_mutex());
    auto& cache = index_cache();
    cache.remove_if([](const IndexEntry& e) { return e.owner.expired(); });
    for (auto it = cache.begin(); it != cache.end(); ++it)
      if (it->impl == impl && it->version == version && it->data == user.data_ptr() &&
          it->m == user.numel() && it->n == n) {
        cache.splice(cache.begin(), cache, it);  // most recently used first
        use_on_current_stream(it->index);
        return it->index;
      }
  }
  RowIndex index = build_index(user, n, op);
  if (cacheable) {
    const std::lock_guard<std::mutex> lock(index_mutex());
    auto& cache = index_cache();
    cache.push_front(IndexEntry{
        c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
            user.getIntrusivePtr()),
        impl, version, user.data_ptr(), user.numel(), n, index});
    while (cache.size() > kIndexCacheSize) cache.pop_back();
  }
  return index;
}

// The row pass of lowrank_bt (G defined) or lowrank_margin over H [users, d].
template <typename T>
void run_rows(const at::Tensor& Z, const RowIndex& index, const at::Tensor& weight,
              const at::Tensor& H, double tau, double noise, at::Tensor& margin, at::Tensor* G,
              at::Tensor* loss, const char* op) {
  cuda::RowsCall<T> c{};
  c.z = z_view(Z);
  c.perm = index.perm.defined() ? index.perm.data_ptr<int64_t>() : nullptr;
  c.offsets = index.offsets.data_ptr<int64_t>();
  c.users = index.users;
  c.weight = G ? weight.data_ptr<T>() : nullptr;
  c.heads = H.data_ptr<T>();
  c.m = Z.size(0);
  c.d = Z.size(1);
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
      at::empty({int64_t(plan.workspace_bytes)}, Z.options().dtype(at::kByte));
  check_cuda(cuda::launch_rows<T>(c, plan, workspace.data_ptr(),
                                  c10::cuda::getCurrentCUDAStream()),
             op, "the kernel launch");
}

// S's rows of the present users (S itself when every user is present: the
// index's users are distinct ids in [0, n), so n of them are all of them).
at::Tensor present_rows(const at::Tensor& S, const RowIndex& index) {
  return index.users == S.size(0) ? S : S.index_select(0, index.present);
}

// Per-user heads H = S[present] V^T, the row pass (see lowrank_bt.cu), and
// the gradients of the present users' rows of S.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lowrank_bt_cuda(
    const at::Tensor& Z_in, const at::Tensor& user_in, const at::Tensor& weight_in,
    const at::Tensor& V_in, const at::Tensor& S_in, double tau, double label_noise) {
  const char* op = "lore::lowrank_bt";
  const BtShapes sh = check_bt_inputs(Z_in, user_in, weight_in, V_in, S_in, op);
  check_label_noise(label_noise, op);
  const c10::cuda::CUDAGuard guard(Z_in.device());
  const at::Tensor V = V_in.contiguous(), S = S_in.contiguous();
  const at::Tensor Z = rows_view(Z_in), weight = weight_in.contiguous();
  const RowIndex index = row_index(user_in, sh.n, op);

  const auto opts = Z_in.options().dtype(sh.acc);
  const at::Tensor S_p = present_rows(S, index);
  const at::Tensor H = at::mm(S_p, V.t());
  at::Tensor G = at::empty({index.users, sh.d}, opts);  // every row is written
  at::Tensor loss = at::empty({}, opts), margin = at::empty({sh.m}, opts);
  if (sh.acc == at::kDouble)
    run_rows<double>(Z, index, weight, H, tau, label_noise, margin, &G, &loss, op);
  else
    run_rows<float>(Z, index, weight, H, tau, label_noise, margin, &G, &loss, op);
  const at::Tensor dS_p = at::mm(G, V);
  at::Tensor dS =
      index.users == sh.n ? dS_p : at::zeros({sh.n, sh.k}, opts).index_copy_(0, index.present, dS_p);
  return {loss, margin, at::mm(G.t(), S_p), dS};
}

at::Tensor lowrank_margin_cuda(const at::Tensor& Z_in, const at::Tensor& user_in,
                               const at::Tensor& V_in, const at::Tensor& S_in) {
  const char* op = "lore::lowrank_margin";
  const BtShapes sh = check_margin_inputs(Z_in, user_in, V_in, S_in, op);
  const c10::cuda::CUDAGuard guard(Z_in.device());
  const RowIndex index = row_index(user_in, sh.n, op);
  const at::Tensor H = at::mm(present_rows(S_in.contiguous(), index), V_in.contiguous().t());
  at::Tensor margin = at::empty({sh.m}, Z_in.options().dtype(sh.acc));
  const at::Tensor Z = rows_view(Z_in);
  if (sh.acc == at::kDouble)
    run_rows<double>(Z, index, at::Tensor(), H, 0.0, 0.0, margin, nullptr, nullptr, op);
  else
    run_rows<float>(Z, index, at::Tensor(), H, 0.0, 0.0, margin, nullptr, nullptr, op);
  return margin;
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
