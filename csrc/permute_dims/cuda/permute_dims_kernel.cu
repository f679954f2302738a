// CUDA kernels of wtc_ext::permute_dims.
//
// Small B: one launch; each block shuffles several columns in shared memory by giving every row
// a 63-bit Philox key and bitonic-sorting (key, row) pairs, which yields a uniform permutation
// (up to key ties, probability < B^2 / 2^63). Large B: a kernel writes the keys and the host side
// sorts them with ATen, so B in the hundreds of thousands stays correct.
#include <cstdint>
#include <tuple>

#include <ATen/cuda/PhiloxUtils.cuh>

#include "common/philox.h"
#include "permute_dims/cuda/permute_dims_cuda.h"

namespace wtc {
namespace {

constexpr int kThreadsPerBlock = 512;

__device__ __forceinline__ void keys_for_pair(const Philox4x32& gen, uint32_t pair,
                                              uint64_t* k0, uint64_t* k1) {
  uint32_t w[4];
  gen.block(pair, w);
  *k0 = ((static_cast<uint64_t>(w[0]) << 32) | w[1]) >> 1;
  *k1 = ((static_cast<uint64_t>(w[2]) << 32) | w[3]) >> 1;
}

template <typename Word>
__global__ void permute_dims_shared_kernel(const Word* __restrict__ z, Word* __restrict__ out,
                                           int64_t* __restrict__ index, int64_t columns,
                                           int64_t B, int64_t d, int P, int cols_per_block,
                                           at::PhiloxCudaState philox) {
  extern __shared__ uint64_t shared[];
  uint64_t* keys = shared;
  uint32_t* rows = reinterpret_cast<uint32_t*>(keys + cols_per_block * P);
  const auto seeds = at::cuda::philox::unpack(philox);
  const uint64_t seed = std::get<0>(seeds);
  const uint64_t offset = std::get<1>(seeds);
  const int64_t first_col = static_cast<int64_t>(blockIdx.x) * cols_per_block;
  const int total = cols_per_block * P;
  const int half = P / 2;

  // Keys, two rows a Philox block; rows past B get the largest key so they sort last.
  for (int p = threadIdx.x; p < total / 2; p += blockDim.x) {
    const int c = p / half;
    const int i = 2 * (p - c * half);
    const int64_t col = first_col + c;
    uint64_t k0 = UINT64_MAX, k1 = UINT64_MAX;
    if (col < columns) {
      Philox4x32 gen(seed, static_cast<uint32_t>(col), offset);
      uint64_t a, b;
      keys_for_pair(gen, static_cast<uint32_t>(i / 2), &a, &b);
      if (i < B) k0 = a;
      if (i + 1 < B) k1 = b;
    }
    keys[c * P + i] = k0;
    keys[c * P + i + 1] = k1;
    rows[c * P + i] = i;
    rows[c * P + i + 1] = i + 1;
  }
  __syncthreads();

  // Bitonic sort of each segment of P entries, ascending.
  for (int k = 2; k <= P; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int t = threadIdx.x; t < total / 2; t += blockDim.x) {
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
      __syncthreads();
    }
  }

  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    const int c = e / P;
    const int i = e - c * P;
    const int64_t col = first_col + c;
    if (col >= columns || i >= B) continue;
    const int64_t l = col / d;
    const int64_t j = col - l * d;
    const int64_t base = l * B * d + j;
    const int64_t src = rows[e];
    out[base + i * d] = z[base + src * d];
    if (index != nullptr) index[base + i * d] = src;
  }
}

__global__ void permute_dims_keys_kernel(int64_t* __restrict__ keys, int64_t n, int64_t B,
                                         int64_t d, at::PhiloxCudaState philox) {
  const auto seeds = at::cuda::philox::unpack(philox);
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % d;
    const int64_t i = (e / d) % B;
    const int64_t l = e / (B * d);
    Philox4x32 gen(std::get<0>(seeds), static_cast<uint32_t>(l * d + j), std::get<1>(seeds));
    uint64_t a, b;
    keys_for_pair(gen, static_cast<uint32_t>(i / 2), &a, &b);
    keys[e] = static_cast<int64_t>((i & 1) ? b : a);
  }
}

int next_pow2(int64_t x) {
  int p = 2;
  while (p < x) p <<= 1;
  return p;
}

}  // namespace

cudaError_t launch_permute_dims_shared(const void* z, void* out, int64_t* index, int64_t L,
                                       int64_t B, int64_t d, int elem_size,
                                       at::PhiloxCudaState philox, cudaStream_t stream) {
  const int P = next_pow2(B);
  const int cols_per_block = P >= 2 * kThreadsPerBlock ? 1 : (2 * kThreadsPerBlock) / P;
  const int threads = cols_per_block * P / 2;
  const int64_t columns = L * d;
  const int64_t blocks = (columns + cols_per_block - 1) / cols_per_block;
  const size_t shared_bytes = static_cast<size_t>(cols_per_block) * P *
                              (sizeof(uint64_t) + sizeof(uint32_t));
  if (blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(blocks));
  switch (elem_size) {
    case 1:
      permute_dims_shared_kernel<<<grid, threads, shared_bytes, stream>>>(
          static_cast<const uint8_t*>(z), static_cast<uint8_t*>(out), index, columns, B, d, P,
          cols_per_block, philox);
      break;
    case 2:
      permute_dims_shared_kernel<<<grid, threads, shared_bytes, stream>>>(
          static_cast<const uint16_t*>(z), static_cast<uint16_t*>(out), index, columns, B, d, P,
          cols_per_block, philox);
      break;
    case 4:
      permute_dims_shared_kernel<<<grid, threads, shared_bytes, stream>>>(
          static_cast<const uint32_t*>(z), static_cast<uint32_t*>(out), index, columns, B, d, P,
          cols_per_block, philox);
      break;
    case 8:
      permute_dims_shared_kernel<<<grid, threads, shared_bytes, stream>>>(
          static_cast<const uint64_t*>(z), static_cast<uint64_t*>(out), index, columns, B, d, P,
          cols_per_block, philox);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_permute_dims_keys(int64_t* keys, int64_t L, int64_t B, int64_t d,
                                     at::PhiloxCudaState philox, cudaStream_t stream) {
  const int64_t n = L * B * d;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535 * 8);
  permute_dims_keys_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(keys, n, B, d,
                                                                                 philox);
  return cudaGetLastError();
}

}  // namespace wtc
