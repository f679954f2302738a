// wtc_ext::permute_dims: schema, CPU kernel and autograd.
//
// Algorithm 1 of the paper (Kim & Mnih's permute_dims): every column of every (B, d) batch gets
// its own uniform random permutation of the B rows. The CPU kernel runs an inside-out
// Fisher-Yates shuffle per column, in parallel over columns, each column drawing from its own
// position in the SplitMix64 sequence of one seed per call, so the result does not depend on the
// number of threads. (A counter-based Philox block per four draws cost more than the shuffle.)
// The int64 index is written only when asked for (return_index, or autograd needs it): it is
// twice the bytes of a float32 output, and at 1000 stacked batches the op is bound by its writes.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include "common/philox.h"
#include "permute_dims/permute_dims.h"

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

uint64_t cpu_permutation_seed(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

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

const c10::TypedOperatorHandle<PermuteDimsSignature>& permute_dims_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::permute_dims", "")
                             .typed<PermuteDimsSignature>();
  return op;
}

namespace {

// Autograd: out = z.gather(-2, index), so grad_z scatters grad_out back through the same index.
// The backward is built from differentiable ATen ops, so double backward works too.
class PermuteDimsFunction : public torch::autograd::Function<PermuteDimsFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& z,
                                                std::optional<at::Generator> generator) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, index] = permute_dims_op().call(z, std::move(generator), /*return_index=*/true);
    ctx->save_for_backward({index});
    ctx->mark_non_differentiable({index});
    return {out, index};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor& grad_out = grad_outputs[0];
    if (!grad_out.defined()) return {at::Tensor(), at::Tensor()};
    const at::Tensor index = ctx->get_saved_variables()[0];
    at::Tensor grad_z = at::zeros_like(grad_out, at::MemoryFormat::Contiguous)
                            .scatter(-2, index, grad_out);
    return {grad_z, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> permute_dims_autograd(const at::Tensor& z,
                                                          std::optional<at::Generator> generator,
                                                          bool return_index) {
  if (!(at::GradMode::is_enabled() && z.requires_grad())) {
    // No graph to record: skip building the autograd node (a quarter of the op's time at B=64).
    at::AutoDispatchBelowADInplaceOrView guard;
    return permute_dims_op().call(z, std::move(generator), return_index);
  }
  // The backward needs the index, so it is always computed (and returned) here.
  auto outputs = PermuteDimsFunction::apply(z, std::move(generator));
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(wtc_ext, m) {
  // index: the int64 (..., B, d) index, or an empty tensor when return_index is false.
  m.def("permute_dims(Tensor z, *, Generator? generator=None, bool return_index=True) -> "
        "(Tensor, Tensor)",
        {at::Tag::nondeterministic_seeded});
}

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) { m.impl("permute_dims", &permute_dims_cpu); }

TORCH_LIBRARY_IMPL(wtc_ext, Autograd, m) { m.impl("permute_dims", &permute_dims_autograd); }

}  // namespace wtc
