// A stand-in for <cuda_runtime.h> that runs the lore CUDA kernels on the CPU,
// for tests only: csrc/cuda/lowrank_bt.cu compiles with g++ against it (with
// -DLORE_CUDA_EMULATION) and every launch runs block by block, each block's
// threads as cooperative fibers (ucontext) on one OS thread.
//
// __syncthreads() switches fibers until every thread of the block has arrived;
// a warp shuffle is an exchange through a buffer between two warp barriers,
// which wait for the 32 threads of that warp only (so warps may shuffle
// independently, as the warp-per-worker row pass does). A warp barrier that
// some lane of the warp never reaches (it finished, or waits at a block
// barrier) is reported as a failed launch, as is a block barrier not reached
// by every thread. Atomics need no locking (one OS thread).
// It checks logic (indexing, tiles, reductions, barriers reached by every
// thread), not the memory model or speed of a GPU.
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using Dim3 = dim3;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
typedef void* cudaStream_t;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };

namespace emu {

// Device the test pretends to have.
inline int g_sms = 2;
inline int g_smem_optin = 227 * 1024;
inline int g_blocks_per_sm = 2;

inline Dim3 g_thread, g_block, g_block_dim, g_grid_dim;
inline std::vector<unsigned char> g_smem;
inline std::vector<double> g_exchange;

enum Wait { kRunning = 0, kBlockBarrier = 1, kWarpBarrier = 2 };

// A fiber starts through its ucontext and afterwards switches with
// _setjmp/_longjmp, which (unlike swapcontext) make no system call.
struct Fiber {
  ucontext_t ctx;
  jmp_buf jb;
  bool started = false;
  bool done = false;
  Wait waiting = kRunning;
  unsigned shuffles = 0;  // parity of the exchange buffer
};
inline std::vector<Fiber>* g_fibers = nullptr;
inline ucontext_t g_scheduler;
// Fiber stacks, allocated once (uninitialised) and reused by every block.
constexpr size_t kStackBytes = 256 * 1024;
inline std::vector<std::unique_ptr<char[]>> g_stacks;
inline jmp_buf g_scheduler_jb;
inline int g_current = 0;

inline void barrier(Wait kind = kBlockBarrier) {
  Fiber& f = (*g_fibers)[g_current];
  f.waiting = kind;
  if (!_setjmp(f.jb)) _longjmp(g_scheduler_jb, 1);
}

inline void resume(Fiber& f) {
  if (_setjmp(g_scheduler_jb)) return;
  if (!f.started) {
    f.started = true;
    swapcontext(&g_scheduler, &f.ctx);
    return;
  }
  _longjmp(f.jb, 1);
}

// One scheduling round over a block's fibers: runs every runnable fiber until
// it waits or ends, then releases complete barriers. Returns 0 while work
// remains, 1 when every fiber finished, -1 on a barrier that cannot complete.
inline int schedule_round(std::vector<Fiber>& fibers, int block) {
  const int threads = int(fibers.size());
  for (int t = 0; t < threads; ++t) {
    Fiber& f = fibers[size_t(t)];
    if (f.done || f.waiting != kRunning) continue;
    g_current = t;
    g_thread = Dim3{unsigned(t), 0, 0};
    resume(f);
  }
  int alive = 0, at_block = 0;
  bool released = false;
  for (int w0 = 0; w0 < threads; w0 += 32) {
    int lanes = 0, at_warp = 0, done = 0;
    for (int t = w0; t < w0 + 32 && t < threads; ++t) {
      const Fiber& f = fibers[size_t(t)];
      ++lanes;
      done += f.done;
      at_warp += f.waiting == kWarpBarrier;
      at_block += !f.done && f.waiting == kBlockBarrier;
    }
    alive += lanes - done;
    if (at_warp > 0 && at_warp == lanes) {
      for (int t = w0; t < w0 + 32 && t < threads; ++t) fibers[size_t(t)].waiting = kRunning;
      released = true;
    } else if (at_warp > 0) {
      std::fprintf(stderr, "emulator: block %d warp %d: %d of %d lanes at a warp barrier\n",
                   block, w0 / 32, at_warp, lanes);
      return -1;
    }
  }
  if (alive == 0) return 1;
  if (released) return 0;
  int finished = 0;
  for (const Fiber& f : fibers) finished += f.done;
  if (finished > 0 || at_block != alive) {
    std::fprintf(stderr, "emulator: block %d: %d threads at a barrier, %d finished\n", block,
                 at_block, finished);
    return -1;
  }
  for (Fiber& f : fibers) f.waiting = kRunning;
  return 0;
}

template <typename Arg>
struct Launch {
  void (*kernel)(Arg);
  const Arg* arg;
};
inline void* g_launch = nullptr;

template <typename Arg>
void fiber_entry() {
  auto* l = static_cast<Launch<Arg>*>(g_launch);
  l->kernel(*l->arg);
  (*g_fibers)[g_current].done = true;
  _longjmp(g_scheduler_jb, 1);
}

// Runs every block of the grid (x fastest, then y), one after the other.
template <typename Arg>
cudaError_t launch(void (*kernel)(Arg), dim3 grid, int threads, size_t smem, const Arg& arg) {
  Launch<Arg> l{kernel, &arg};
  g_launch = &l;
  g_grid_dim = grid;
  g_block_dim = Dim3{unsigned(threads), 1, 1};
  g_exchange.assign(2 * size_t(threads), 0.0);
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      g_block = Dim3{bx, by, 0};
      g_smem.assign(smem + 64, 0xA5);  // never zero: catches reads of unset shared memory
      std::vector<Fiber> fibers(static_cast<size_t>(threads));
      g_fibers = &fibers;
      while (g_stacks.size() < size_t(threads)) g_stacks.emplace_back(new char[kStackBytes]);
      for (int t = 0; t < threads; ++t) {
        Fiber& f = fibers[size_t(t)];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = g_stacks[size_t(t)].get();
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = &g_scheduler;
        makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_entry<Arg>), 0);
      }
      int state = 0;
      while ((state = schedule_round(fibers, int(bx + grid.x * by))) == 0) {
      }
      g_fibers = nullptr;
      if (state < 0) return cudaErrorLaunchFailure;
    }
  return cudaSuccess;
}

inline unsigned char* dynamic_smem() {
  const uintptr_t p = reinterpret_cast<uintptr_t>(g_smem.data());
  return reinterpret_cast<unsigned char*>((p + 63) & ~uintptr_t(63));
}

}  // namespace emu

#define threadIdx (::emu::g_thread)
#define blockIdx (::emu::g_block)
#define blockDim (::emu::g_block_dim)
#define gridDim (::emu::g_grid_dim)
#define LORE_DYNAMIC_SMEM(name) unsigned char* name = ::emu::dynamic_smem()

inline void __syncthreads() { emu::barrier(); }

// A warp's exchange: every lane posts its value, waits for its warp and reads
// its partner's. Shuffles alternate between two buffers, so one barrier each
// suffices: a lane writes a buffer again only after the next shuffle's
// barrier, which every lane reaches after reading it.
template <typename T>
T warp_exchange(T value, unsigned src) {
  const unsigned t = threadIdx.x;
  emu::Fiber& f = (*emu::g_fibers)[t];
  double* buf = emu::g_exchange.data() + (f.shuffles++ & 1u) * emu::g_block_dim.x;
  buf[t] = static_cast<double>(value);
  emu::barrier(emu::kWarpBarrier);
  return static_cast<T>(buf[(t & ~31u) + (src & 31u)]);
}

template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask) {
  return warp_exchange(value, (threadIdx.x & 31u) ^ unsigned(mask));
}

template <typename T>
T __shfl_sync(unsigned, T value, int src_lane) {
  return warp_exchange(value, unsigned(src_lane));
}

template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcs(const T* p) {
  return *p;
}

inline cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrMultiProcessorCount ? emu::g_sms : emu::g_smem_optin;
  return cudaSuccess;
}

template <typename K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int bytes) {
  return bytes <= emu::g_smem_optin ? cudaSuccess : cudaErrorInvalidValue;
}

template <typename K>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int, size_t smem) {
  *n = smem <= size_t(emu::g_smem_optin) ? emu::g_blocks_per_sm : 0;
  return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }

template <typename Arg>
cudaError_t lore_emulate_launch(void (*kernel)(Arg), dim3 grid, int threads, size_t smem,
                                const Arg& arg) {
  return emu::launch(kernel, grid, threads, smem, arg);
}
