// wtc_ext::permute_dims on CUDA: host side (generator, stream, dispatch between the paths).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <mutex>

#include "permute_dims/permute_dims.h"
#include "permute_dims/cuda/permute_dims_cuda.h"

namespace wtc {
namespace {

std::tuple<at::Tensor, at::Tensor> permute_dims_cuda(const at::Tensor& z_in,
                                                      std::optional<at::Generator> generator,
                                                      bool return_index) {
  check_permute_dims_args(z_in, generator);
  const c10::cuda::CUDAGuard device_guard(z_in.device());
  const at::Tensor z = z_in.contiguous();
  const PermuteShape s = permute_shape(z);
  const auto index_opts = z.options().dtype(at::kLong);
  const at::IntArrayRef index_shape = return_index ? z.sizes() : at::IntArrayRef{0};
  if (z.numel() == 0) {
    return {at::empty(z.sizes(), z.options()), at::empty(index_shape, index_opts)};
  }
  if (s.B == 1) {
    return {z.clone(at::MemoryFormat::Contiguous), at::zeros(index_shape, index_opts)};
  }
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      generator, at::cuda::detail::getDefaultCUDAGenerator());
  at::PhiloxCudaState philox;
  {
    std::lock_guard<std::mutex> lock(gen->mutex_);
    philox = gen->philox_cuda_state(4);
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  if (s.B <= kPermuteSharedMaxRows) {
    at::Tensor out = at::empty(z.sizes(), z.options());
    at::Tensor index = at::empty(index_shape, index_opts);
    C10_CUDA_CHECK(launch_permute_dims_shared(z.const_data_ptr(), out.data_ptr(),
                                              return_index ? index.data_ptr<int64_t>() : nullptr,
                                              s.L, s.B, s.d,
                                              static_cast<int>(z.element_size()), philox, stream));
    return {out, index};
  }
  at::Tensor keys = at::empty(z.sizes(), z.options().dtype(at::kLong));
  C10_CUDA_CHECK(
      launch_permute_dims_keys(keys.data_ptr<int64_t>(), s.L, s.B, s.d, philox, stream));
  at::Tensor index = std::get<1>(at::sort(keys, /*stable=*/true, /*dim=*/-2, /*descending=*/false));
  at::Tensor out = z.gather(-2, index);
  return {out, return_index ? index : at::empty({0}, index_opts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CUDA, m) { m.impl("permute_dims", &permute_dims_cuda); }

}  // namespace wtc
