// Shared by the CPU and CUDA registrations of wtc_ext::permute_dims.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/Generator.h>
#include <ATen/core/dispatch/Dispatcher.h>

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

// The registered op, for calls from C++ (autograd, the direct Python entry point).
using PermuteDimsSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                std::optional<at::Generator>, bool);
const c10::TypedOperatorHandle<PermuteDimsSignature>& permute_dims_op();

}  // namespace wtc
