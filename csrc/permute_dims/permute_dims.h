// wtc_ext::permute_dims: argument checks and shape, shared by its CPU and CUDA kernels.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/Generator.h>

#include <cstdint>
#include <optional>

namespace wtc {

// Validates z and generator; raises ValueError naming the argument.
void check_permute_dims_args(const at::Tensor& z, const std::optional<at::Generator>& generator);

// z viewed as (L, B, d): L = product of the leading dims.
struct PermuteShape {
  int64_t L, B, d;
};
PermuteShape permute_shape(const at::Tensor& z);

}  // namespace wtc
