// CUDA kernels of wtc_ext::permute_dims: the sort-based shuffle of permute_dims/sort_shuffle.h,
// whose steps they run in parallel (one launch for small B; keys for ATen's sort for large B).
#include <algorithm>
#include <cstdint>
#include <tuple>

#include <ATen/cuda/PhiloxUtils.cuh>

#include "permute_dims/sort_shuffle.h"
#include "permute_dims/cuda/permute_dims_cuda.h"

namespace wtc {
namespace {

namespace ss = sort_shuffle;

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

  for (int t = threadIdx.x; t < total / 2; t += blockDim.x) {
    ss::fill_pair(t, first_col, columns, B, P, seed, offset, keys, rows);
  }
  __syncthreads();
  for (int k = 2; k <= P; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int t = threadIdx.x; t < total / 2; t += blockDim.x) {
        ss::bitonic_exchange(t, k, j, P, keys, rows);
      }
      __syncthreads();
    }
  }
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    ss::write_entry(e, first_col, columns, B, d, P, rows, z, out, index);
  }
}

__global__ void permute_dims_keys_kernel(int64_t* __restrict__ keys, int64_t n, int64_t B,
                                         int64_t d, at::PhiloxCudaState philox) {
  const auto seeds = at::cuda::philox::unpack(philox);
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys[e] = ss::key_of_element(e, B, d, std::get<0>(seeds), std::get<1>(seeds));
  }
}

template <typename Word>
void launch_shared(const void* z, void* out, int64_t* index, int64_t columns, int64_t B,
                   int64_t d, const ss::SharedLayout& g, at::PhiloxCudaState philox,
                   cudaStream_t stream) {
  permute_dims_shared_kernel<<<static_cast<unsigned>(g.blocks), g.threads, g.shared_bytes(),
                               stream>>>(static_cast<const Word*>(z), static_cast<Word*>(out),
                                         index, columns, B, d, g.P, g.cols_per_block, philox);
}

}  // namespace

cudaError_t launch_permute_dims_shared(const void* z, void* out, int64_t* index, int64_t L,
                                       int64_t B, int64_t d, int elem_size,
                                       at::PhiloxCudaState philox, cudaStream_t stream) {
  const int64_t columns = L * d;
  const ss::SharedLayout g = ss::shared_layout(B, columns);
  if (g.blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
  switch (elem_size) {
    case 1: launch_shared<uint8_t>(z, out, index, columns, B, d, g, philox, stream); break;
    case 2: launch_shared<uint16_t>(z, out, index, columns, B, d, g, philox, stream); break;
    case 4: launch_shared<uint32_t>(z, out, index, columns, B, d, g, philox, stream); break;
    case 8: launch_shared<uint64_t>(z, out, index, columns, B, d, g, philox, stream); break;
    default: return cudaErrorInvalidValue;
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
