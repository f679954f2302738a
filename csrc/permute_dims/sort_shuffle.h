// The device kernels' shuffle of permute_dims, step by step: every row of a column gets a 63-bit
// Philox key and the column is sorted by key, which yields a uniform permutation (up to key ties,
// probability < B^2 / 2^63). Small B: one block sorts (key, row) pairs of several columns in
// shared memory with a bitonic network. Large B: a kernel writes the keys and the host side sorts
// them with ATen. Both paths draw the same keys, so for one (seed, offset) they give the same
// permutation.
//
// Each step is what one thread does between two barriers, written for host and device: the CUDA
// kernels (cuda/permute_dims_kernel.cu) run the steps in parallel with __syncthreads between
// them, and the host emulation (testing/device_glue_on_cpu.cpp) runs the same steps one thread
// after another, so the CPU tests check the kernels' index arithmetic.
#pragma once
#include <cstdint>

#include "common/host_device.h"
#include "common/philox.h"

namespace wtc {
namespace sort_shuffle {

// Largest B for the one-launch shared-memory path; larger B sorts the keys with ATen instead.
constexpr int64_t kSharedMaxRows = 2048;
constexpr int kThreadsPerBlock = 512;

// The keys of rows 2 pair and 2 pair + 1 of column col (of the L * d columns): one Philox block
// of stream col.
WTC_HOST_DEVICE void pair_keys(uint64_t seed, uint64_t offset, int64_t col, int64_t pair,
                               uint64_t* k0, uint64_t* k1) {
  const Philox4x32 gen(seed, static_cast<uint32_t>(col), offset);
  uint32_t w[4];
  gen.block(static_cast<uint32_t>(pair), w);
  *k0 = ((static_cast<uint64_t>(w[0]) << 32) | w[1]) >> 1;
  *k1 = ((static_cast<uint64_t>(w[2]) << 32) | w[3]) >> 1;
}

// The shared-memory path's launch shape for B rows: a power-of-two segment of P entries a column
// (rows past B are padding that sorts last), cols_per_block columns a block, a thread per pair.
struct SharedLayout {
  int P, cols_per_block, threads;
  int64_t blocks;
  // bytes of shared memory: a key (uint64) and a row (uint32) per entry
  int64_t shared_bytes() const { return static_cast<int64_t>(cols_per_block) * P * 12; }
};

inline SharedLayout shared_layout(int64_t B, int64_t columns) {
  int P = 2;
  while (P < B) P <<= 1;
  const int cols = P >= 2 * kThreadsPerBlock ? 1 : (2 * kThreadsPerBlock) / P;
  return {P, cols, cols * P / 2, (columns + cols - 1) / cols};
}

// Step 1, thread t of a block's cols_per_block * P / 2 pairs: the keys and rows of one pair.
WTC_HOST_DEVICE void fill_pair(int t, int64_t first_col, int64_t columns, int64_t B, int P,
                               uint64_t seed, uint64_t offset, uint64_t* keys, uint32_t* rows) {
  const int half = P / 2;
  const int c = t / half;
  const int i = 2 * (t - c * half);
  const int64_t col = first_col + c;
  uint64_t k0 = UINT64_MAX, k1 = UINT64_MAX;  // padding rows sort last (real keys are 63-bit)
  if (col < columns) {
    uint64_t a, b;
    pair_keys(seed, offset, col, i / 2, &a, &b);
    if (i < B) k0 = a;
    if (i + 1 < B) k1 = b;
  }
  keys[c * P + i] = k0;
  keys[c * P + i + 1] = k1;
  rows[c * P + i] = static_cast<uint32_t>(i);
  rows[c * P + i + 1] = static_cast<uint32_t>(i + 1);
}

// Step 2, for k = 2, 4, ..., P and j = k / 2, ..., 1 (a barrier after each): thread t
// compare-exchanges one pair of the bitonic network; every P-entry segment ends ascending.
WTC_HOST_DEVICE void bitonic_exchange(int t, int k, int j, int P, uint64_t* keys,
                                      uint32_t* rows) {
  const int e = 2 * j * (t / j) + (t % j);
  const int partner = e + j;
  const bool ascending = ((e & (P - 1)) & k) == 0;
  const uint64_t ke = keys[e], kp = keys[partner];
  if ((ke > kp) == ascending) {
    keys[e] = kp;
    keys[partner] = ke;
    const uint32_t r = rows[e];
    rows[e] = rows[partner];
    rows[partner] = r;
  }
}

// Step 3, entry e of the block's cols_per_block * P: output row i of its column takes the row
// that sorted to position i.
template <typename Word>
WTC_HOST_DEVICE void write_entry(int e, int64_t first_col, int64_t columns, int64_t B, int64_t d,
                                 int P, const uint32_t* rows, const Word* z, Word* out,
                                 int64_t* index) {
  const int c = e / P;
  const int i = e - c * P;
  const int64_t col = first_col + c;
  if (col >= columns || i >= B) return;
  const int64_t l = col / d;
  const int64_t j = col - l * d;
  const int64_t base = l * B * d + j;
  const int64_t src = rows[e];
  out[base + i * d] = z[base + src * d];
  if (index != nullptr) index[base + i * d] = src;
}

// The large-B path's keys: element e of the (L, B, d) keys tensor.
WTC_HOST_DEVICE int64_t key_of_element(int64_t e, int64_t B, int64_t d, uint64_t seed,
                                       uint64_t offset) {
  const int64_t j = e % d;
  const int64_t i = (e / d) % B;
  const int64_t l = e / (B * d);
  uint64_t a, b;
  pair_keys(seed, offset, l * d + j, i / 2, &a, &b);
  return static_cast<int64_t>((i & 1) ? b : a);
}

}  // namespace sort_shuffle
}  // namespace wtc
