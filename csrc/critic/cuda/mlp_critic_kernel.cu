// Fused gradient-penalty kernel: one warp per row computes the input gradient's norm, the row's
// penalty and the penalty's gradient in one pass over g.
#include <cstdint>

#include "critic/penalty_row.h"
#include "critic/cuda/mlp_critic_cuda.h"

namespace wtc {
namespace {

constexpr int kWarpsPerBlock = 8;

template <typename scalar_t>
__global__ void penalty_rows_kernel(const scalar_t* __restrict__ g, scalar_t* __restrict__ per_row,
                                    scalar_t* __restrict__ G, int64_t B, int64_t d, int64_t batch,
                                    double center, double scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= B) return;
  const scalar_t* x = g + row * d;
  double sq = 0;
  for (int64_t k = lane; k < d; k += 32) {
    const double v = static_cast<double>(x[k]);
    sq += v * v;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, offset);
  const double norm = sqrt(sq);
  const double r = norm - center;
  if (lane == 0) per_row[row] = static_cast<scalar_t>(r * r);
  const double coef = penalty_gradient_factor(norm, center, scale, batch);
  for (int64_t k = lane; k < d; k += 32) {
    G[row * d + k] = static_cast<scalar_t>(coef * static_cast<double>(x[k]));
  }
}

}  // namespace

cudaError_t launch_penalty_rows(const void* g, void* per_row, void* G, int64_t B, int64_t d,
                                int64_t batch, double center, double scale, bool is_double,
                                cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  const int64_t blocks = (B + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int threads = 32 * kWarpsPerBlock;
  if (is_double) {
    penalty_rows_kernel<double><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        static_cast<const double*>(g), static_cast<double*>(per_row), static_cast<double*>(G), B,
        d, batch, center, scale);
  } else {
    penalty_rows_kernel<float><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        static_cast<const float*>(g), static_cast<float*>(per_row), static_cast<float*>(G), B, d,
        batch, center, scale);
  }
  return cudaGetLastError();
}

}  // namespace wtc
