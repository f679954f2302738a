// wtc_ext::permute_dims: schema and argument checks.
//
// Algorithm 1 of the paper (Kim & Mnih's permute_dims): every column of every (B, d) batch gets
// its own uniform random permutation of the B rows. The kernels are in cpu/ and cuda/, the
// autograd in autograd/.
#include "permute_dims/permute_dims.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

namespace wtc {

void check_permute_dims_args(const at::Tensor& z, const std::optional<at::Generator>& generator) {
  TORCH_CHECK_VALUE(z.dim() >= 2,
                    "permute_dims: expected z of shape (..., B, d) with at least 2 dims, but got "
                    "a tensor of shape ",
                    z.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(z.scalar_type()),
                    "permute_dims: expected z to have a floating-point dtype, but got ",
                    z.scalar_type());
  TORCH_CHECK_VALUE(z.size(-2) <= std::numeric_limits<int32_t>::max(),
                    "permute_dims: expected at most 2^31 - 1 rows (dim -2 of z), but got ",
                    z.size(-2));
  const int64_t columns = z.dim() >= 2 && z.size(-2) > 0 ? z.numel() / z.size(-2) : 0;
  TORCH_CHECK_VALUE(columns <= std::numeric_limits<uint32_t>::max(),
                    "permute_dims: expected at most 2^32 - 1 columns in all, but z has ",
                    columns);
  if (generator.has_value() && generator->defined()) {
    TORCH_CHECK_VALUE(generator->device().type() == z.device().type(),
                      "permute_dims: generator is on device '", generator->device(),
                      "' but z is on '", z.device(),
                      "'; pass a torch.Generator for z's device or generator=None");
  }
}

PermuteShape permute_shape(const at::Tensor& z) {
  const int64_t B = z.size(-2);
  const int64_t d = z.size(-1);
  const int64_t L = d * B == 0 ? 0 : z.numel() / (B * d);
  return {L, B, d};
}

TORCH_LIBRARY_FRAGMENT(wtc_ext, m) {
  // index: the int64 (..., B, d) index, or an empty tensor when return_index is false.
  m.def("permute_dims(Tensor z, *, Generator? generator=None, bool return_index=True) -> "
        "(Tensor, Tensor)",
        {at::Tag::nondeterministic_seeded});
}

}  // namespace wtc
