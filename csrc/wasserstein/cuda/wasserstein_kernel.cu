// CUDA kernels of the sorted-CDF Wasserstein ops: the merge of two sorted samples, one thread per
// row (wasserstein_1d) or per (column, factor, label) segment (conditional_wasserstein). The
// sorting itself is ATen's segmented sort, on the host side.
#include <cstdint>

#include "wasserstein/merge_w1.h"
#include "wasserstein/cuda/wasserstein_cuda.h"

namespace wtc {
namespace {

constexpr int kThreads = 128;

template <typename T>
__device__ double device_total(const T* w, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(w[i]);
  return s;
}

template <typename T>
__global__ void sorted_rows_w1_kernel(const T* __restrict__ a, const T* __restrict__ wa,
                                      const T* __restrict__ b, const T* __restrict__ wb,
                                      int64_t R, int64_t n, int64_t m, T* __restrict__ out,
                                      const T* __restrict__ grad, T* __restrict__ grad_a,
                                      T* __restrict__ grad_b) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= R) return;
  const T* rwa = wa ? wa + r * n : nullptr;
  const T* rwb = wb ? wb + r * m : nullptr;
  const double ta = rwa ? device_total(rwa, n) : static_cast<double>(n);
  const double tb = rwb ? device_total(rwb, m) : static_cast<double>(m);
  out[r] = static_cast<T>(merge_w1<T>(a + r * n, rwa, n, ta, b + r * m, rwb, m, tb,
                                      grad_a ? grad_a + r * n : nullptr,
                                      grad_b ? grad_b + r * m : nullptr,
                                      grad ? static_cast<double>(grad[r]) : 0.0));
}

template <typename T>
__global__ void segments_w1_kernel(const T* __restrict__ a, const int64_t* __restrict__ a_start,
                                   const int64_t* __restrict__ a_len, const T* __restrict__ b,
                                   const int64_t* __restrict__ b_start,
                                   const int64_t* __restrict__ b_len, int64_t S,
                                   T* __restrict__ out) {
  const int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= S) return;
  const int64_t n = a_len[s], m = b_len[s];
  out[s] = static_cast<T>(merge_w1<T>(a + a_start[s], nullptr, n, static_cast<double>(n),
                                      b + b_start[s], nullptr, m, static_cast<double>(m),
                                      nullptr, nullptr, 0.0));
}

unsigned blocks_for(int64_t count) { return static_cast<unsigned>((count + kThreads - 1) / kThreads); }

}  // namespace

cudaError_t launch_sorted_rows_w1(const void* a, const void* wa, const void* b, const void* wb,
                                  int64_t R, int64_t n, int64_t m, void* out, const void* grad,
                                  void* grad_a, void* grad_b, bool is_double,
                                  cudaStream_t stream) {
  if (R == 0) return cudaSuccess;
  if (is_double) {
    sorted_rows_w1_kernel<double><<<blocks_for(R), kThreads, 0, stream>>>(
        static_cast<const double*>(a), static_cast<const double*>(wa),
        static_cast<const double*>(b), static_cast<const double*>(wb), R, n, m,
        static_cast<double*>(out), static_cast<const double*>(grad), static_cast<double*>(grad_a),
        static_cast<double*>(grad_b));
  } else {
    sorted_rows_w1_kernel<float><<<blocks_for(R), kThreads, 0, stream>>>(
        static_cast<const float*>(a), static_cast<const float*>(wa), static_cast<const float*>(b),
        static_cast<const float*>(wb), R, n, m, static_cast<float*>(out),
        static_cast<const float*>(grad), static_cast<float*>(grad_a), static_cast<float*>(grad_b));
  }
  return cudaGetLastError();
}

cudaError_t launch_segments_w1(const void* a, const int64_t* a_start, const int64_t* a_len,
                               const void* b, const int64_t* b_start, const int64_t* b_len,
                               int64_t S, void* out, bool is_double, cudaStream_t stream) {
  if (S == 0) return cudaSuccess;
  if (is_double) {
    segments_w1_kernel<double><<<blocks_for(S), kThreads, 0, stream>>>(
        static_cast<const double*>(a), a_start, a_len, static_cast<const double*>(b), b_start,
        b_len, S, static_cast<double*>(out));
  } else {
    segments_w1_kernel<float><<<blocks_for(S), kThreads, 0, stream>>>(
        static_cast<const float*>(a), a_start, a_len, static_cast<const float*>(b), b_start,
        b_len, S, static_cast<float*>(out));
  }
  return cudaGetLastError();
}

}  // namespace wtc
