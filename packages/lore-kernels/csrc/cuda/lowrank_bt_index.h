// The row index of the CUDA row pass, built on the host: torch-free so that
// the emulator tests run the registration's own code (sorting, permutation,
// range check, compact user ids) rather than a Python copy of it.
//
// The registration builds it once per user tensor (and version) and keeps it
// on the device, so a training loop that passes the same `user` every step
// pays one host round trip on the first call and none after (see
// lowrank_bt_cuda.cpp); the row pass then reads
//   perm     [m]          position in user order -> row of Z (unsorted input only:
//                         Z is addressed through it, never copied)
//   present  [users]      the users with rows in the call, ascending
//   offsets  [users + 1]  compact user c owns positions [offsets[c], offsets[c+1])
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lore::cuda {

struct RowIndexInfo {
  int64_t bad_row;  // first row whose user is outside [0, n), or -1
  bool sorted;      // users already ascending: no permutation
  int64_t users;    // distinct users with rows
};

// Fills perm (only when the rows are not sorted), present and offsets, which
// must hold m, m and m + 1 entries. Stable: a user's rows keep their order,
// so the row pass sums them in the caller's order. O(m + n) time; n int64 of
// scratch when unsorted (a counting sort).
inline RowIndexInfo build_row_index(const int64_t* user, int64_t m, int64_t n, int64_t* perm,
                                    int64_t* present, int64_t* offsets) {
  RowIndexInfo info{-1, true, 0};
  for (int64_t i = 0; i < m; ++i) {
    if (user[i] < 0 || user[i] >= n) {
      info.bad_row = i;
      return info;
    }
    if (i > 0 && user[i] < user[i - 1]) info.sorted = false;
  }
  offsets[0] = 0;
  if (info.sorted) {
    for (int64_t i = 0; i < m; ++i)
      if (i == 0 || user[i] != user[i - 1]) {
        present[info.users] = user[i];
        if (info.users > 0) offsets[info.users] = i;
        ++info.users;
      }
    offsets[info.users] = m;
    return info;
  }
  std::vector<int64_t> next(size_t(n), 0);  // rows per user, then the next free position
  for (int64_t i = 0; i < m; ++i) ++next[size_t(user[i])];
  int64_t pos = 0;
  for (int64_t u = 0; u < n; ++u) {
    const int64_t rows = next[size_t(u)];
    if (rows == 0) continue;
    present[info.users] = u;
    offsets[info.users] = pos;
    ++info.users;
    next[size_t(u)] = pos;
    pos += rows;
  }
  offsets[info.users] = m;
  for (int64_t i = 0; i < m; ++i) perm[next[size_t(user[i])]++] = i;
  return info;
}

// Bytes the op allocates beyond its inputs and outputs (loss, margin [m],
// dV [d, k], dS [n, k]): H and G over the present users, the row pass's
// workspace (edge slots, loss partials), the index (perm only when unsorted),
// the gathered S rows and G V. `acc` is the accumulation type's size.
inline int64_t extra_bytes(int64_t m, int64_t d, int64_t k, int64_t users, bool sorted,
                           int64_t workspace, int64_t acc) {
  return 2 * users * d * acc + workspace + (sorted ? 0 : m * 8) + (2 * users + 1) * 8 +
         2 * users * k * acc;
}

}  // namespace lore::cuda
