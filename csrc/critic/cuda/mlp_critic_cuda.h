// Launcher of the fused penalty kernel (no ATen/torch headers: the .cu compiles fast).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace wtc {

// g: (rows, d) contiguous; per_row[b] = (||g_b|| - center)^2; G = scale * 2 (||g_b|| - center)
// g_b / (batch ||g_b||), zero where ||g_b|| = 0 (batch: the rows a mean runs over, rows itself
// for one critic, B for R stacked critics of B rows each). is_double selects float64, else
// float32.
cudaError_t launch_penalty_rows(const void* g, void* per_row, void* G, int64_t rows, int64_t d,
                                int64_t batch, double center, double scale, bool is_double,
                                cudaStream_t stream);

}  // namespace wtc
