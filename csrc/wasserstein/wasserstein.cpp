// wtc_ext::wasserstein_1d and wtc_ext::conditional_wasserstein: schemas and argument checks.
//
// Both are sorted-CDF algorithms: sort each sample once, then one merge of the two CDFs gives
// the exact W1 = integral |F - G| (what scipy.stats.wasserstein_distance computes). The kernels
// are in cpu/ and cuda/, wasserstein_1d's autograd in autograd/; conditional_wasserstein has no
// gradient.
#include "wasserstein/wasserstein.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace wtc {

void check_wasserstein_1d_args(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights) {
  TORCH_CHECK_VALUE(u.dim() == 2 && v.dim() == 2 && u.size(0) == v.size(0),
                    "wasserstein_1d: expected u (R, n) and v (R, m) with the same R, got ",
                    u.sizes(), " and ", v.sizes());
  TORCH_CHECK_VALUE(u.scalar_type() == v.scalar_type() &&
                        (u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble),
                    "wasserstein_1d: expected u and v both float32 or both float64, got ",
                    u.scalar_type(), " and ", v.scalar_type());
  TORCH_CHECK_VALUE(u.device() == v.device(), "wasserstein_1d: u and v must be on the same "
                    "device, got ", u.device(), " and ", v.device());
  if (u_weights.has_value()) {
    TORCH_CHECK_VALUE(u_weights->sizes() == u.sizes() && u_weights->device() == u.device() &&
                          u_weights->scalar_type() == u.scalar_type(),
                      "wasserstein_1d: u_weights must match u's shape, device and dtype");
  }
  if (v_weights.has_value()) {
    TORCH_CHECK_VALUE(v_weights->sizes() == v.sizes() && v_weights->device() == v.device() &&
                          v_weights->scalar_type() == v.scalar_type(),
                      "wasserstein_1d: v_weights must match v's shape, device and dtype");
  }
}

void check_conditional_args(const at::Tensor& z, const at::Tensor& labels,
                            const std::optional<at::Tensor>& reference,
                            const std::optional<at::Tensor>& reference_index,
                            int64_t num_classes, bool permuted, bool check_label_range) {
  TORCH_CHECK_VALUE(static_cast<int>(reference.has_value()) +
                            static_cast<int>(reference_index.has_value()) +
                            static_cast<int>(permuted) <= 1,
                    "conditional_wasserstein: pass at most one of reference, reference_index and "
                    "permuted");
  if (reference_index.has_value()) {
    TORCH_CHECK_VALUE(reference_index->sizes() == z.sizes() &&
                          reference_index->scalar_type() == at::kLong &&
                          reference_index->device() == z.device(),
                      "conditional_wasserstein: reference_index must be int64 of z's shape ",
                      z.sizes(), " on z's device, got ", reference_index->scalar_type(), " ",
                      reference_index->sizes());
  }
  TORCH_CHECK_VALUE(z.dim() == 2 || z.dim() == 3, "conditional_wasserstein: expected z of shape "
                    "(N, d), or (R, N, d) for R runs' codes, got ", z.sizes());
  TORCH_CHECK_VALUE(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
                    "conditional_wasserstein: expected z float32 or float64, got ",
                    z.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(0) == z.size(-2) &&
                        labels.scalar_type() == at::kLong && labels.device() == z.device(),
                    "conditional_wasserstein: expected int64 labels of shape (N, K) = (",
                    z.size(-2), ", K) on z's device, got ", labels.scalar_type(), " ",
                    labels.sizes(), " on ", labels.device());
  TORCH_CHECK_VALUE(num_classes >= 1, "conditional_wasserstein: num_classes must be >= 1");
  if (reference.has_value()) {
    TORCH_CHECK_VALUE(reference->sizes() == z.sizes() && reference->device() == z.device() &&
                          reference->scalar_type() == z.scalar_type(),
                      "conditional_wasserstein: reference must match z's shape, device and "
                      "dtype, got ", reference->sizes());
  }
  // A finite sum means every value is finite (NaN and inf propagate); only a non-finite sum,
  // which an overflow can also give, needs the elementwise pass.
  auto all_finite = [](const at::Tensor& t) {
    return at::isfinite(t.sum()).item<bool>() || at::isfinite(t).all().item<bool>();
  };
  if (z.numel() > 0) {
    TORCH_CHECK_VALUE(all_finite(z), "conditional_wasserstein: z has NaN or infinite values");
    if (reference.has_value()) {
      TORCH_CHECK_VALUE(all_finite(*reference),
                        "conditional_wasserstein: reference has NaN or infinite values");
    }
  }
  if (check_label_range && labels.numel() > 0) {
    const auto [low, high] = at::aminmax(labels);
    TORCH_CHECK_VALUE(low.item<int64_t>() >= 0 && high.item<int64_t>() < num_classes,
                      "conditional_wasserstein: labels must lie in [0, num_classes = ",
                      num_classes, ")");
  }
}

void check_conditional_generators(const at::Tensor& z, bool permuted,
                                  const std::optional<at::Generator>& generator,
                                  const std::optional<std::vector<at::Generator>>& generators) {
  if (!generators.has_value()) return;
  TORCH_CHECK_VALUE(permuted, "conditional_wasserstein: generators are only used with the "
                    "permuted reference");
  TORCH_CHECK_VALUE(!generator.has_value(), "conditional_wasserstein: pass generator or "
                    "generators, not both");
  TORCH_CHECK_VALUE(z.dim() == 3 && static_cast<int64_t>(generators->size()) == z.size(0),
                    "conditional_wasserstein: generators (one per run) need z of shape "
                    "(R, N, d) with R = ", generators->size(), ", got z of shape ", z.sizes());
}

TORCH_LIBRARY_FRAGMENT(wtc_ext, m) {
  m.def("wasserstein_1d(Tensor u, Tensor v, Tensor? u_weights=None, Tensor? v_weights=None) "
        "-> Tensor");
  m.def("wasserstein_1d_backward(Tensor grad, Tensor u, Tensor v, Tensor? u_weights, "
        "Tensor? v_weights) -> (Tensor, Tensor)");
  // permuted: the reference is permute_dims(z, generator=generator) (its permutation, drawn in
  // the kernel and never written out). scale_by_range: the distances of z's columns divided by
  // each column's range (max - min; constant columns unscaled), as if z had been.
  // z (R, N, d): R runs' codes sharing the labels (reference and reference_index (R, N, d) too),
  // W (R, d, K, C) equal to R calls on z[r]; a permuted reference draws run r's permutation from
  // generators[r], or else in turn from the one generator, as those R calls would.
  m.def("conditional_wasserstein(Tensor z, Tensor labels, Tensor? reference, "
        "Tensor? reference_index, int num_classes, bool permuted=False, "
        "Generator? generator=None, bool scale_by_range=False, Generator?[]? generators=None) "
        "-> Tensor",
        {at::Tag::nondeterministic_seeded});
}

}  // namespace wtc
