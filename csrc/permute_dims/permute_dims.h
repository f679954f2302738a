// Shared by the CPU and CUDA registrations of wtc_ext::permute_dims.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/Generator.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "common/philox.h"

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

// The CPU kernel's permutation of column c (of the L * d columns): an inside-out Fisher-Yates
// shuffle drawing from SplitMix stream c of the call's seed. Shared with conditional_wasserstein,
// whose permuted reference is permute_dims's without writing it out.
template <typename Index>
inline void cpu_column_permutation(uint64_t seed, int64_t c, int64_t B, Index* perm) {
  if (B <= 0) return;
  SplitMixStream rng(seed, static_cast<uint32_t>(c), 0);
  perm[0] = 0;
  for (int64_t i = 1; i < B; ++i) {
    const int64_t k = rng.below(static_cast<uint32_t>(i + 1));
    perm[i] = perm[k];
    perm[k] = static_cast<Index>(i);
  }
}

// The CPU kernel's seed of one call: one random64() draw from generator (or the default one).
uint64_t cpu_permutation_seed(const std::optional<at::Generator>& generator);

}  // namespace wtc
