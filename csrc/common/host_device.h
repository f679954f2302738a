// Marks small helpers usable from both host code and CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define WTC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define WTC_HOST_DEVICE inline
#endif
