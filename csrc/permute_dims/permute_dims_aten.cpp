// wtc_ext::permute_dims's device algorithm on ATen ops, for any device with the sort_shuffle
// kernels (the CUDA glue uses it; the CPU has its own kernel, cpu/permute_dims_kernel.cpp).
#include <ATen/ATen.h>

#include <vector>

#include "permute_dims/permute_dims.h"
#include "permute_dims/sort_shuffle.h"

namespace wtc {

std::tuple<at::Tensor, at::Tensor> permute_dims_by_sort(
    const at::Tensor& z_in, bool return_index, const std::function<SortShuffleKernels()>& draw) {
  const at::Tensor z = z_in.contiguous();
  const PermuteShape s = permute_shape(z);
  const auto index_opts = z.options().dtype(at::kLong);
  // (An owning vector: an IntArrayRef{0} would point at a temporary gone by the next line.)
  const std::vector<int64_t> index_shape = return_index ? z.sizes().vec() : std::vector<int64_t>{0};
  if (z.numel() == 0) {
    return {at::empty(z.sizes(), z.options()), at::empty(index_shape, index_opts)};
  }
  if (s.B == 1) {
    return {z.clone(at::MemoryFormat::Contiguous), at::zeros(index_shape, index_opts)};
  }
  const SortShuffleKernels kernels = draw();
  if (s.B <= sort_shuffle::kSharedMaxRows) {
    at::Tensor out = at::empty(z.sizes(), z.options());
    at::Tensor index = at::empty(index_shape, index_opts);
    kernels.shared(z, out, return_index ? index.data_ptr<int64_t>() : nullptr);
    return {out, index};
  }
  at::Tensor keys = at::empty(z.sizes(), index_opts);
  kernels.keys(keys);
  // Stable: a (vanishingly rare) tie of keys keeps the rows' order.
  at::Tensor index = std::get<1>(at::sort(keys, /*stable=*/true, /*dim=*/-2, /*descending=*/false));
  at::Tensor out = z.gather(-2, index);
  return {out, return_index ? index : at::empty({0}, index_opts)};
}

}  // namespace wtc
