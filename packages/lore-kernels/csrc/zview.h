// How the kernels see Z: raw pointer, row stride and storage type. Torch-free,
// shared by the CPU and CUDA kernels and their registrations.
#pragma once

#include <cstdint>

namespace lore {

// Storage type of Z. The accumulation type is double for kF64 (the gradcheck
// mode) and float otherwise.
enum class ZType : int { kF32 = 0, kF64 = 1, kBF16 = 2, kF16 = 3 };

// Z is [m, d] with unit column stride and row stride ldz (in elements).
struct ZView {
  const void* data;
  int64_t ldz;
  ZType type;
};

inline int64_t ztype_bytes(ZType t) {
  return t == ZType::kF64 ? 8 : (t == ZType::kF32 ? 4 : 2);
}

}  // namespace lore
