// Launchers of the sorted-CDF Wasserstein kernels (no ATen/torch headers in the .cu).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace wtc {

// One thread per row: a (R, n), b (R, m) sorted rows; wa/wb weights or nullptr; out (R).
// grad (R) with grad_a/grad_b: per-element derivatives times grad[r] (all nullptr: values only).
cudaError_t launch_sorted_rows_w1(const void* a, const void* wa, const void* b, const void* wb,
                                  int64_t R, int64_t n, int64_t m, void* out, const void* grad,
                                  void* grad_a, void* grad_b, bool is_double,
                                  cudaStream_t stream);

// One thread per segment s: W1 between a[a_start[s] .. + a_len[s]) and b[b_start[s] .. +
// b_len[s]), both sorted, unweighted; an empty segment gives NaN.
cudaError_t launch_segments_w1(const void* a, const int64_t* a_start, const int64_t* a_len,
                               const void* b, const int64_t* b_start, const int64_t* b_len,
                               int64_t S, void* out, bool is_double, cudaStream_t stream);

}  // namespace wtc
