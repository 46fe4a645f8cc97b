// A stand-in for <cuda_runtime.h> that runs the lore CUDA kernels on the CPU,
// for tests only: csrc/cuda/lowrank_bt.cu compiles with g++ against it (with
// -DLORE_CUDA_EMULATION) and every launch runs block by block, each block's
// threads as cooperative fibers (ucontext) on one OS thread.
//
// __syncthreads() switches fibers until every thread of the block has arrived;
// a warp shuffle is a block-wide exchange through a buffer between two such
// barriers, so it is only valid where all threads of the block shuffle
// together (true in these kernels). Atomics need no locking (one OS thread).
// It checks logic (indexing, tiles, reductions, barriers reached by every
// thread), not the memory model or speed of a GPU.
#pragma once

#include <ucontext.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)

struct uint4 {
  unsigned x, y, z, w;
};
struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

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

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  bool waiting = false;
};
inline std::vector<Fiber>* g_fibers = nullptr;
inline ucontext_t g_scheduler;
inline int g_current = 0;

inline void barrier() {
  Fiber& f = (*g_fibers)[g_current];
  f.waiting = true;
  swapcontext(&f.ctx, &g_scheduler);
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
}

// Runs every block of the grid, one after the other.
template <typename Arg>
cudaError_t launch(void (*kernel)(Arg), int grid, int threads, size_t smem, const Arg& arg) {
  Launch<Arg> l{kernel, &arg};
  g_launch = &l;
  g_grid_dim = Dim3{unsigned(grid), 1, 1};
  g_block_dim = Dim3{unsigned(threads), 1, 1};
  g_exchange.assign(size_t(threads), 0.0);
  for (int b = 0; b < grid; ++b) {
    g_block = Dim3{unsigned(b), 0, 0};
    g_smem.assign(smem + 64, 0xA5);  // never zero: catches reads of unset shared memory
    std::vector<Fiber> fibers(static_cast<size_t>(threads));
    g_fibers = &fibers;
    for (int t = 0; t < threads; ++t) {
      Fiber& f = fibers[size_t(t)];
      f.stack.resize(256 * 1024);
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.data();
      f.ctx.uc_stack.ss_size = f.stack.size();
      f.ctx.uc_link = &g_scheduler;
      makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_entry<Arg>), 0);
    }
    for (;;) {
      int alive = 0, waiting = 0;
      for (int t = 0; t < threads; ++t) {
        Fiber& f = fibers[size_t(t)];
        if (f.done) continue;
        g_current = t;
        g_thread = Dim3{unsigned(t), 0, 0};
        f.waiting = false;
        swapcontext(&g_scheduler, &f.ctx);
        if (!f.done) {
          ++alive;
          waiting += f.waiting;
        }
      }
      if (alive == 0) break;
      int finished = 0;
      for (const Fiber& f : fibers) finished += f.done;
      if (finished > 0 || waiting != alive) {
        std::fprintf(stderr, "emulator: block %d: %d threads at a barrier, %d finished\n", b,
                     waiting, finished);
        return cudaErrorLaunchFailure;
      }
    }
    g_fibers = nullptr;
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

template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask) {
  const unsigned t = threadIdx.x;
  emu::g_exchange[t] = static_cast<double>(value);
  emu::barrier();
  const T other = static_cast<T>(emu::g_exchange[t ^ unsigned(mask)]);
  emu::barrier();
  return other;
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
cudaError_t lore_emulate_launch(void (*kernel)(Arg), int grid, int threads, size_t smem,
                                const Arg& arg) {
  return emu::launch(kernel, grid, threads, smem, arg);
}
