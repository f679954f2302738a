// wtc_ext::permute_dims: the CPU kernel.
//
// The CPU kernel runs an inside-out Fisher-Yates shuffle per column (common/column_shuffle.h), in
// parallel over columns, each column drawing from its own position in the SplitMix64 sequence of
// one seed per call, so the result does not depend on the number of threads. (A counter-based
// Philox block per four draws cost more than the shuffle.) The int64 index is written only when
// asked for (return_index, or autograd needs it): it is twice the bytes of a float32 output, and
// at 1000 stacked batches the op is bound by its writes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/column_shuffle.h"
#include "permute_dims/permute_dims.h"

namespace wtc {
namespace {

template <typename Word>  // an unsigned integer of the element's size: the shuffle only moves bits
void permute_columns_cpu(const Word* z, Word* out, int64_t* index, PermuteShape s, uint64_t seed) {
  const int64_t columns = s.L * s.d;
  // Keep tiny problems on one thread: a parallel region costs more than shuffling 64 rows.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(s.B, 1));
  at::parallel_for(0, columns, grain, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> perm(s.B);
    for (int64_t c = begin; c < end; ++c) {
      cpu_column_permutation(seed, c, s.B, perm.data());
      const int64_t l = c / s.d;
      const int64_t j = c - l * s.d;
      const int64_t base = l * s.B * s.d + j;
      for (int64_t i = 0; i < s.B; ++i) {
        out[base + i * s.d] = z[base + perm[i] * s.d];
        if (index != nullptr) index[base + i * s.d] = perm[i];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> permute_dims_cpu(const at::Tensor& z_in,
                                                     std::optional<at::Generator> generator,
                                                     bool return_index) {
  check_permute_dims_args(z_in, generator);
  const at::Tensor z = z_in.contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options());
  at::Tensor index = at::empty(return_index ? z.sizes() : at::IntArrayRef{0},
                               z.options().dtype(at::kLong));
  int64_t* index_ptr = return_index ? index.data_ptr<int64_t>() : nullptr;
  const PermuteShape s = permute_shape(z);
  if (z.numel() == 0) return {out, index};

  const uint64_t seed = cpu_permutation_seed(generator);
  switch (z.element_size()) {
    case 1:
      permute_columns_cpu(static_cast<const uint8_t*>(z.const_data_ptr()),
                          static_cast<uint8_t*>(out.data_ptr()), index_ptr, s, seed);
      break;
    case 2:
      permute_columns_cpu(static_cast<const uint16_t*>(z.const_data_ptr()),
                          static_cast<uint16_t*>(out.data_ptr()), index_ptr, s, seed);
      break;
    case 4:
      permute_columns_cpu(static_cast<const uint32_t*>(z.const_data_ptr()),
                          static_cast<uint32_t*>(out.data_ptr()), index_ptr, s, seed);
      break;
    case 8:
      permute_columns_cpu(static_cast<const uint64_t*>(z.const_data_ptr()),
                          static_cast<uint64_t*>(out.data_ptr()), index_ptr, s, seed);
      break;
    default:
      TORCH_CHECK_VALUE(false, "permute_dims: unsupported element size ", z.element_size());
  }
  return {out, index};
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) { m.impl("permute_dims", &permute_dims_cpu); }

}  // namespace wtc
