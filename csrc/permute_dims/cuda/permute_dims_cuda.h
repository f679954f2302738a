// Launchers of the permute_dims CUDA kernels. Kept free of ATen/torch headers so that the .cu
// file compiles in seconds rather than minutes.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include <ATen/cuda/PhiloxCudaState.h>

namespace wtc {

// z, out: (L, B, d) contiguous, elements of elem_size bytes; index: (L, B, d) int64, or nullptr
// when the caller does not want it.
// Requires 2 <= B <= sort_shuffle::kSharedMaxRows (permute_dims/sort_shuffle.h).
cudaError_t launch_permute_dims_shared(const void* z, void* out, int64_t* index, int64_t L,
                                       int64_t B, int64_t d, int elem_size,
                                       at::PhiloxCudaState philox, cudaStream_t stream);

// keys: (L, B, d) int64, filled with non-negative 63-bit random keys, column by column from the
// same Philox streams as the shared path.
cudaError_t launch_permute_dims_keys(int64_t* keys, int64_t L, int64_t B, int64_t d,
                                     at::PhiloxCudaState philox, cudaStream_t stream);

}  // namespace wtc
