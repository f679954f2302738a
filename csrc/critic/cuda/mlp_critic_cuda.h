// Launcher of the fused penalty kernel (no ATen/torch headers: the .cu compiles fast).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace wtc {

// g: (B, d) contiguous; per_row[b] = (||g_b|| - center)^2; G = scale * 2 (||g_b|| - center) g_b /
// (B ||g_b||), zero where ||g_b|| = 0. is_double selects float64, else float32.
cudaError_t launch_penalty_rows(const void* g, void* per_row, void* G, int64_t B, int64_t d,
                                double center, double scale, bool is_double, cudaStream_t stream);

}  // namespace wtc
