// The column shuffle of permute_dims, shared by the permute_dims kernels and by
// conditional_wasserstein's permuted reference (permute_dims's permutation, drawn without writing
// it out), so that neither op family includes the other.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/Generator.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "common/philox.h"

namespace wtc {

// The CPU kernel's permutation of column c (of the L * d columns): an inside-out Fisher-Yates
// shuffle drawing from SplitMix stream c of the call's seed.
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

// The registered wtc_ext::permute_dims, for calls from C++ (its autograd, the direct Python entry
// point, and the CUDA conditional_wasserstein, which shuffles through the op on the device).
using PermuteDimsSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                std::optional<at::Generator>, bool);
const c10::TypedOperatorHandle<PermuteDimsSignature>& permute_dims_op();

}  // namespace wtc
