// wtc_ext::permute_dims: argument checks and shape, shared by its CPU and CUDA kernels.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/Generator.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <tuple>

namespace wtc {

// Validates z and generator; raises ValueError naming the argument.
void check_permute_dims_args(const at::Tensor& z, const std::optional<at::Generator>& generator);

// z viewed as (L, B, d): L = product of the leading dims.
struct PermuteShape {
  int64_t L, B, d;
};
PermuteShape permute_shape(const at::Tensor& z);

// The device kernels' host side (permute_dims_aten.cpp), shared by the CUDA glue and by its
// emulation on the CPU: the kernels of sort_shuffle.h, bound to one call's random numbers.
struct SortShuffleKernels {
  // out (and index, unless nullptr) from z, all (L, B, d) contiguous; 2 <= B <= kSharedMaxRows.
  std::function<void(const at::Tensor& z, const at::Tensor& out, int64_t* index)> shared;
  // keys (L, B, d) int64: every row's key, for B above kSharedMaxRows.
  std::function<void(const at::Tensor& keys)> keys;
};

// permute_dims of a checked z on the kernels that draw() returns; draw runs once, and only when
// the shuffle needs random numbers (not for an empty z or a single row).
std::tuple<at::Tensor, at::Tensor> permute_dims_by_sort(
    const at::Tensor& z, bool return_index, const std::function<SortShuffleKernels()>& draw);

}  // namespace wtc
